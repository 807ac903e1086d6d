# The two C libraries the core links, PCRE2 (the tokenizer's pre-split
# patterns) and SQLite (the label store), as rlhf::pcre2 and rlhf::sqlite3:
# through pkg-config where it is installed (Debian: libpcre2-dev,
# libsqlite3-dev), else by header and library name under CMAKE_PREFIX_PATH
# and the system's folders, for a machine with a compiler and the libraries
# but no pkg-config (a GPU image that has only PyTorch's wheel; see
# scripts/gpu_check.sh).
function(rlhf_find_c_library name module header deb_package)  # ARGN: the library's file names
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(RLHF_PC_${name} QUIET IMPORTED_TARGET GLOBAL ${module})
  endif()
  add_library(rlhf::${name} INTERFACE IMPORTED GLOBAL)
  if(TARGET PkgConfig::RLHF_PC_${name})
    target_link_libraries(rlhf::${name} INTERFACE PkgConfig::RLHF_PC_${name})
    return()
  endif()
  find_path(RLHF_${name}_INCLUDE_DIR ${header})
  find_library(RLHF_${name}_LIBRARY NAMES ${ARGN})
  if(NOT RLHF_${name}_INCLUDE_DIR OR NOT RLHF_${name}_LIBRARY)
    message(FATAL_ERROR "${module} not found (looked for ${header} and lib${ARGV4}): install its development "
            "package (Debian and Ubuntu: ${deb_package}), or point CMAKE_PREFIX_PATH at a folder with "
            "include/${header} and lib/lib${ARGV4}.a or .so")
  endif()
  target_include_directories(rlhf::${name} INTERFACE "${RLHF_${name}_INCLUDE_DIR}")
  target_link_libraries(rlhf::${name} INTERFACE "${RLHF_${name}_LIBRARY}")
  if(RLHF_${name}_LIBRARY MATCHES "\\.a$")
    # A static library's own needs (SQLite's: maths, dynamic loading, threads).
    target_link_libraries(rlhf::${name} INTERFACE m ${CMAKE_DL_LIBS} pthread)
  endif()
  message(STATUS "${module}: ${RLHF_${name}_LIBRARY} (without pkg-config)")
endfunction()

rlhf_find_c_library(pcre2 libpcre2-8 pcre2.h libpcre2-dev pcre2-8)
rlhf_find_c_library(sqlite3 sqlite3 sqlite3.h libsqlite3-dev sqlite3)

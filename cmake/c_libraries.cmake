# The two C libraries the core links, PCRE2 (the tokenizer's pre-split
# patterns) and SQLite (the label store), as rlhf::pcre2 and rlhf::sqlite3:
# through pkg-config where it is installed (Debian: libpcre2-dev,
# libsqlite3-dev), else by header and library name under CMAKE_PREFIX_PATH
# and the system's folders, for a machine with a compiler and the libraries
# but no pkg-config (a GPU image that has only PyTorch's wheel; see
# scripts/gpu_check.sh).
function(rlhf_find_c_library name module header)  # ARGN: the library's file names
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
    message(FATAL_ERROR "${module} not found (looked for ${header} and lib${ARGV3}): install its development "
            "package (Debian and Ubuntu: ${RLHF_DEB_${name}}), or point CMAKE_PREFIX_PATH at a folder with "
            "include/${header} and lib/lib${ARGV3}.a or .so")
  endif()
  target_include_directories(rlhf::${name} INTERFACE "${RLHF_${name}_INCLUDE_DIR}")
  target_link_libraries(rlhf::${name} INTERFACE "${RLHF_${name}_LIBRARY}")
  if(RLHF_${name}_LIBRARY MATCHES "\\.a$")
    # A static SQLite needs the maths, dynamic-loading and thread libraries.
    target_link_libraries(rlhf::${name} INTERFACE m ${CMAKE_DL_LIBS} pthread)
  endif()
  message(STATUS "${module}: ${RLHF_${name}_LIBRARY} (without pkg-config)")
endfunction()

set(RLHF_DEB_pcre2 libpcre2-dev)
set(RLHF_DEB_sqlite3 libsqlite3-dev)
rlhf_find_c_library(pcre2 libpcre2-8 pcre2.h pcre2-8)
rlhf_find_c_library(sqlite3 sqlite3 sqlite3.h sqlite3)

# ctest c_libraries_without_pkg_config: configures tests/c_libraries with
# pkg-config made unavailable, so cmake/c_libraries.cmake must find PCRE2
# and SQLite by header and library name (as on a GPU image that has only
# PyTorch's wheel), then builds and runs the program that calls both.
#   cmake -DSOURCE=<repo> -DBINARY=<scratch folder> -P run.cmake
file(REMOVE_RECURSE "${BINARY}")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE}/tests/c_libraries" -B "${BINARY}"
                        -DRLHF_SOURCE_DIR=${SOURCE} -DPKG_CONFIG_EXECUTABLE=/nonexistent/pkg-config
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring without pkg-config failed:\n${out}\n${err}")
endif()
foreach(module libpcre2-8 sqlite3)
  if(NOT out MATCHES "${module}: [^\n]* \\(without pkg-config\\)")
    message(FATAL_ERROR "${module} was not found by name without pkg-config:\n${out}")
  endif()
endforeach()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building against the libraries found by name failed:\n${out}\n${err}")
endif()
execute_process(COMMAND "${BINARY}/c_libraries_check" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the program linked against them failed (exit ${rc}):\n${out}")
endif()
message(STATUS "${out}")

# quant_add_test(<name> SOURCES <files...> LIBS <targets...> [LABELS <labels...>])
# One gtest binary per component; tests get QUANT_SHARED_DIR and TEST_SRCDIR compiled in.
# Label `slow` marks tests that the fast loop (ctest -LE slow) skips.
function(quant_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT QUANT_BUILD_TESTS)
    return()
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE
    QUANT_SHARED_DIR="${QUANT_SHARED_DIR}"
    QUANT_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    QUANT_BINARY_DIR="${CMAKE_BINARY_DIR}")
  if(NOT ARG_LABELS)
    set(ARG_LABELS fast)
  endif()
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${ARG_LABELS}" ENVIRONMENT "OPENBLAS_NUM_THREADS=2")
endfunction()

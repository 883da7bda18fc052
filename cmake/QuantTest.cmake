# quant_add_test(<name> SOURCES <files...> LIBS <targets...> [LABELS <labels...>]
#                [BLAS_THREADS n] [COST n])
# One gtest binary per component; tests get QUANT_SHARED_DIR and TEST_SRCDIR compiled in.
# Label `slow` marks tests that the fast loop (ctest -LE slow) skips; ctest starts them first
# (COST), so that a long one does not run alone at the end of a parallel run. COST (default 100
# for slow tests, 1 otherwise) orders the slow ones among themselves on a fresh build, before
# ctest has timings of its own (Testing/Temporary/CTestCostData.txt): give the binaries whose
# tests take minutes more, so that the longest start first under ctest -j2.
# BLAS_THREADS (default 1): OpenBLAS threads per test process. ctest -j2 runs two tests at once
# on this 2-core machine, and OpenBLAS threads spin (sched_yield) when they outnumber the
# cores: with 2 each, a whole run spent 9 of its 47 CPU minutes in the kernel. Tests that pin
# figures measured with 2 threads (qctl_quality_test) ask for 2.
function(quant_add_test name)
  cmake_parse_arguments(ARG "" "BLAS_THREADS;COST" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT ARG_BLAS_THREADS)
    set(ARG_BLAS_THREADS 1)
  endif()
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
  set(cost 1)
  if(ARG_COST)
    set(cost ${ARG_COST})
  elseif("slow" IN_LIST ARG_LABELS)
    set(cost 100)
  endif()
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60 TEST_PREFIX "${name}."
    PROPERTIES LABELS "${ARG_LABELS}" ENVIRONMENT "OPENBLAS_NUM_THREADS=${ARG_BLAS_THREADS}"
    COST ${cost})
endfunction()

# quant_add_fuzzer(<name> SOURCE <file> LIBS <targets...> SEEDS <files...> [ITERATIONS n])
# Builds a libFuzzer-style target with the standalone driver (bounded mutations of the seeds)
# and registers it as a ctest test labelled `fuzz`.
add_library(quant_fuzz_driver STATIC ${CMAKE_SOURCE_DIR}/tests/fuzz/standalone_driver.cc)
function(quant_add_fuzzer name)
  cmake_parse_arguments(ARG "" "SOURCE;ITERATIONS" "LIBS;SEEDS" ${ARGN})
  if(NOT QUANT_BUILD_TESTS)
    return()
  endif()
  if(NOT ARG_ITERATIONS)
    set(ARG_ITERATIONS 20000)
  endif()
  add_executable(${name} ${ARG_SOURCE})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} quant_fuzz_driver)
  add_test(NAME ${name} COMMAND ${name} --iterations ${ARG_ITERATIONS} ${ARG_SEEDS})
  set_tests_properties(${name} PROPERTIES LABELS "fuzz")
endfunction()

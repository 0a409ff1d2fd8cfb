# Warnings, tuning and sanitizers, applied to host C++ only (never to nvcc).
add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-Wall> $<$<COMPILE_LANGUAGE:CXX>:-Wextra>
                    $<$<COMPILE_LANGUAGE:CXX>:-Wno-unused-parameter>)
if(CHORUS_NATIVE)
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag(-march=native CHORUS_HAS_MARCH_NATIVE)
  if(CHORUS_HAS_MARCH_NATIVE)
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-march=native>)
  endif()
endif()
if(CMAKE_BUILD_TYPE MATCHES "Rel")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-O3>)
endif()
if(CHORUS_SANITIZER)
  string(REPLACE "+" "," _san "${CHORUS_SANITIZER}")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${_san}>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=all>)
  add_link_options(-fsanitize=${_san})
endif()
# Fuzzing build (clang): instrument every library for coverage and ASan/UBSan.
if(CHORUS_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CHORUS_BUILD_FUZZERS needs clang (CXX=clang++)")
  endif()
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link,address,undefined>)
  add_link_options(-fsanitize=address,undefined)
endif()
# clang checks the lock annotations (ABSL_GUARDED_BY & co., core/mutex.h): make check-thread-safety.
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-Wthread-safety>
                      $<$<COMPILE_LANGUAGE:CXX>:-Werror=thread-safety>)
endif()

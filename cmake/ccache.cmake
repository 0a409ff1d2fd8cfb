# Use ccache for repeat builds when it is installed (2-core machines: rebuilds dominate).
find_program(CHORUS_CCACHE ccache)
if(CHORUS_CCACHE)
  set(CMAKE_C_COMPILER_LAUNCHER ${CHORUS_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CHORUS_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CHORUS_CCACHE})
endif()

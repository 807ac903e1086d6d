# LibTorch from a PyTorch wheel (pip's `torch` package) instead of
# find_package(Torch). The wheel's own CMake files insist on a CUDA toolkit
# when the wheel was built with CUDA (PyPI's Linux wheels are), so on a
# machine without one they fail; this links the CPU libraries directly.
#
#   cmake -DRLHF_TORCH_WHEEL=/path/to/site-packages/torch ...
#
# RLHF_TORCH_WHEEL_CUDA=ON also links libtorch_cuda (for a GPU machine whose
# wheel has its nvidia-* packages installed). Sets TORCH_LIBRARIES, and
# RLHF_OPENMP_RUNTIME when the wheel carries its own OpenMP runtime.
set(_wheel "${RLHF_TORCH_WHEEL}")
if(NOT EXISTS "${_wheel}/lib/libtorch_cpu.so" OR NOT EXISTS "${_wheel}/include/torch/csrc/api/include/torch/torch.h")
  message(FATAL_ERROR "RLHF_TORCH_WHEEL=${_wheel} is not a PyTorch package folder "
          "(expected lib/libtorch_cpu.so and include/torch/csrc/api/include/torch/torch.h). "
          "Point it at site-packages/torch of an environment where `pip install torch` ran; "
          "scripts/setup_torch2.sh makes one.")
endif()

# The wheel's C++ ABI: c10 exports std::__cxx11 symbols only with the new ABI.
execute_process(COMMAND nm -D --defined-only "${_wheel}/lib/libc10.so"
                OUTPUT_VARIABLE _c10_symbols ERROR_QUIET)
if(_c10_symbols MATCHES "__cxx11")
  set(_abi 1)
else()
  set(_abi 0)
  message(WARNING "This PyTorch wheel uses the old C++ ABI (_GLIBCXX_USE_CXX11_ABI=0); Debian's "
          "GoogleTest and Boost use the new one, so tests may not link. Use torch >= 2.7.")
endif()

# libtorch_cpu needs libcudart and libcupti even for CPU work (the profiler
# links them); PyPI ships them beside the torch package: CUDA 12 wheels as
# nvidia-cuda-runtime-cu12 and nvidia-cuda-cupti-cu12 (nvidia/<name>/lib),
# CUDA 13 wheels (torch >= 2.10) as nvidia-cuda-runtime and
# nvidia-cuda-cupti, all in nvidia/cu13/lib.
set(_rpath "${_wheel}/lib")
foreach(_sub cu13 cuda_runtime cuda_cupti cudnn cublas cusparse cufft curand cusolver nccl nvjitlink cusparselt nvshmem cufile nvtx)
  if(EXISTS "${_wheel}/../nvidia/${_sub}/lib")
    list(APPEND _rpath "${_wheel}/../nvidia/${_sub}/lib")
  endif()
endforeach()

add_library(rlhf_torch_wheel INTERFACE)
target_include_directories(rlhf_torch_wheel SYSTEM INTERFACE
  "${_wheel}/include" "${_wheel}/include/torch/csrc/api/include")
target_compile_definitions(rlhf_torch_wheel INTERFACE _GLIBCXX_USE_CXX11_ABI=${_abi})
set(_libs "${_wheel}/lib/libtorch_cpu.so" "${_wheel}/lib/libc10.so")
if(RLHF_TORCH_WHEEL_CUDA)
  # Nothing references libtorch_cuda's symbols; its static initialisers
  # register the CUDA kernels, so it must be linked even though "unused".
  list(APPEND _libs -Wl,--no-as-needed "${_wheel}/lib/libtorch_cuda.so" "${_wheel}/lib/libc10_cuda.so" -Wl,--as-needed)
endif()
# PyPI's wheels carry their own libgomp (2.9.1: lib/libgomp.so.1; older ones a
# renamed copy such as libgomp-a34b3233.so.1): our OpenMP code must call that
# one, not a second runtime with its own threads.
file(GLOB _wheel_gomp "${_wheel}/lib/libgomp*.so*")
if(_wheel_gomp)
  list(GET _wheel_gomp 0 RLHF_OPENMP_RUNTIME)
endif()
string(REPLACE ";" ":" _rpath_flat "${_rpath}")
target_link_libraries(rlhf_torch_wheel INTERFACE ${_libs} Threads::Threads "-Wl,-rpath,${_rpath_flat}")
set(TORCH_LIBRARIES rlhf_torch_wheel)
message(STATUS "LibTorch from the PyTorch wheel at ${_wheel} (C++11 ABI ${_abi})")

# Dependencies.cmake: finds LibTorch, yaml-cpp, nlohmann_json, MPI and GoogleTest, and decides
# whether the CUDA/NCCL paths are built (ORTHOTRON_WITH_CUDA).

# LibTorch from the torch wheel: launch/setup.sh passes torch.utils.cmake_prefix_path in CMAKE_PREFIX_PATH.
# Its CUDA build needs the CUDA toolkit's headers; nvcc 13 is on the PATH on our machines.
find_package(Torch REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(MPI REQUIRED COMPONENTS CXX)
find_package(Threads REQUIRED)
# The same libgomp soname LibTorch's wheel ships (torch/lib/libgomp.so.1): the process loads one
# OpenMP runtime, whose thread count at::set_num_threads sets.
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(ZLIB REQUIRED)  # CRC-32 of checkpoint shards

set(_torch_has_cuda OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(_torch_has_cuda ON)
endif()
if(ORTHOTRON_CUDA STREQUAL "AUTO")
  set(ORTHOTRON_WITH_CUDA ${_torch_has_cuda})
elseif(ORTHOTRON_CUDA)
  if(NOT _torch_has_cuda)
    message(FATAL_ERROR "ORTHOTRON_CUDA=ON but the LibTorch found at ${Torch_DIR} was built without CUDA")
  endif()
  set(ORTHOTRON_WITH_CUDA ON)
else()
  set(ORTHOTRON_WITH_CUDA OFF)
endif()
message(STATUS "orthotron: LibTorch ${Torch_VERSION} at ${Torch_DIR}; CUDA/NCCL paths: ${ORTHOTRON_WITH_CUDA}")

if(ORTHOTRON_WITH_CUDA)
  find_package(CUDAToolkit REQUIRED)
  # Prefer the NCCL that ships beside LibTorch in the wheel (nvidia/nccl), so the process loads one
  # libnccl.so.2; fall back to the CUDA toolkit's or NCCL_HOME's.
  get_filename_component(_site_packages "${Torch_DIR}/../../../.." ABSOLUTE)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR
               HINTS ${_site_packages}/nvidia/nccl/lib ENV NCCL_HOME ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib lib64)
  find_path(NCCL_INCLUDE_DIR NAMES nccl.h
            HINTS ${_site_packages}/nvidia/nccl/include ENV NCCL_HOME ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  if(NOT NCCL_LIBRARY OR NOT NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "CUDA/NCCL paths requested but nccl.h / libnccl were not found (set NCCL_HOME)")
  endif()
  message(STATUS "orthotron: NCCL ${NCCL_LIBRARY} (headers ${NCCL_INCLUDE_DIR})")
endif()

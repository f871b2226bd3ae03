# Install.cmake: makes orthotron an installable, find_package-able component.
#
#   cmake --install build --prefix P
#
# installs the headers of base/, parallel/ and optim/ under P/include/orthotron/<folder>/, the three
# static libraries under P/lib, and P/lib/cmake/orthotron/ with orthotronConfig.cmake, its version
# file and the exported targets orthotron::base, orthotron::parallel and orthotron::optim. A consumer:
#
#   find_package(orthotron 0.1 REQUIRED)          # CMAKE_PREFIX_PATH="P;<torch cmake prefix>"
#   target_link_libraries(app PRIVATE orthotron::optim)
#
# The config finds the dependencies itself (Torch, yaml-cpp, nlohmann_json, MPI, Threads and, for a
# CUDA build, CUDAToolkit and NCCL), so the consumer's CMAKE_PREFIX_PATH must also hold LibTorch's
# prefix (python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)'), of the same torch
# version orthotron was built with.
#
# Projects that embed orthotron with add_subdirectory get the same names as aliases; they must call
# find_package(Torch) themselves before add_subdirectory (LibTorch's targets carry generator
# expressions naming its other targets, which only resolve where those are visible).
# ORTHOTRON_INSTALL (default: only when orthotron is the top-level project) turns the install rules off.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(_orthotron_libraries orthotron_base orthotron_parallel orthotron_optim)
foreach(_lib IN LISTS _orthotron_libraries)
  string(REPLACE "orthotron_" "" _short ${_lib})
  set_target_properties(${_lib} PROPERTIES EXPORT_NAME ${_short})
  add_library(orthotron::${_short} ALIAS ${_lib})
endforeach()

option(ORTHOTRON_INSTALL "Generate the install rules and the orthotron package config" ${PROJECT_IS_TOP_LEVEL})
if(NOT ORTHOTRON_INSTALL)
  return()
endif()

set(ORTHOTRON_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/orthotron
    CACHE STRING "Where the orthotron package config is installed, relative to the prefix")

# The link interface in the install tree. In the build tree the libraries link ${TORCH_LIBRARIES}
# (the targets torch and torch_library plus absolute paths such as .../torch/lib/libc10.so) and
# ${NCCL_LIBRARY} (an absolute path into the torch wheel). Exported as they are, the package would
# hold this machine's paths; instead, in the install tree they are replaced by two targets the
# package config defines from the consumer's own find_package(Torch) and NCCL search:
# orthotron::torch_libraries (= the consumer's ${TORCH_LIBRARIES}) and orthotron::nccl.
function(_orthotron_install_link target replaced_items replacement)
  get_target_property(_libs ${target} INTERFACE_LINK_LIBRARIES)
  if(NOT _libs)
    return()
  endif()
  set(_out "")
  set(_hit OFF)
  foreach(_item IN LISTS _libs)
    if(_item IN_LIST replaced_items)
      list(APPEND _out "$<BUILD_INTERFACE:${_item}>")
      set(_hit ON)
    else()
      list(APPEND _out "${_item}")
    endif()
  endforeach()
  if(_hit)
    list(APPEND _out "$<INSTALL_INTERFACE:${replacement}>")
  endif()
  set_property(TARGET ${target} PROPERTY INTERFACE_LINK_LIBRARIES "${_out}")
endfunction()

foreach(_lib IN LISTS _orthotron_libraries)
  _orthotron_install_link(${_lib} "${TORCH_LIBRARIES}" orthotron::torch_libraries)
  if(ORTHOTRON_WITH_CUDA)
    _orthotron_install_link(${_lib} "${NCCL_LIBRARY}" orthotron::nccl)
  endif()
endforeach()

# A sanitizer build's libraries need the sanitizer runtimes at the consumer's link.
if(ORTHOTRON_SANITIZE)
  set_property(TARGET orthotron_base APPEND PROPERTY INTERFACE_LINK_OPTIONS
               "$<INSTALL_INTERFACE:-fsanitize=address>" "$<INSTALL_INTERFACE:-fsanitize=undefined>")
endif()

install(TARGETS ${_orthotron_libraries}
        EXPORT orthotronTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(_folder base parallel optim)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${_folder}/
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/orthotron/${_folder}
          FILES_MATCHING PATTERN "*.h")
endforeach()
install(EXPORT orthotronTargets
        NAMESPACE orthotron::
        FILE orthotronTargets.cmake
        DESTINATION ${ORTHOTRON_INSTALL_CMAKEDIR})

# Values the config template records from this build.
set(ORTHOTRON_TORCH_VERSION ${Torch_VERSION})
set(ORTHOTRON_NCCL_HINT_LIB_DIR "")
set(ORTHOTRON_NCCL_HINT_INCLUDE_DIR "")
if(ORTHOTRON_WITH_CUDA)
  get_filename_component(ORTHOTRON_NCCL_HINT_LIB_DIR "${NCCL_LIBRARY}" DIRECTORY)
  set(ORTHOTRON_NCCL_HINT_INCLUDE_DIR "${NCCL_INCLUDE_DIR}")
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/orthotronConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/orthotronConfig.cmake
                              INSTALL_DESTINATION ${ORTHOTRON_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/orthotronConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION}
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/orthotronConfig.cmake ${PROJECT_BINARY_DIR}/orthotronConfigVersion.cmake
        DESTINATION ${ORTHOTRON_INSTALL_CMAKEDIR})

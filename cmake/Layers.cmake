# Layers.cmake: each library sees only its own folder and the layers below it. A library's headers
# are published through an include root of its own in the build tree (build/include/<folder>/,
# holding one link to the source folder), so optim/ cannot include engine/ headers and parallel/
# cannot include optim/ ones: the compiler enforces the layering engine -> optim -> parallel -> base.

# orthotron_layer(<target> <folder>): publishes <folder>/*.h as "<folder>/x.h" to <target> and to
# whatever links it; installed under include/orthotron.
function(orthotron_layer target folder)
  set(root ${PROJECT_BINARY_DIR}/include/${folder})
  file(MAKE_DIRECTORY ${root})
  if(NOT EXISTS ${root}/${folder})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${folder} ${root}/${folder} SYMBOLIC)
  endif()
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${root}> $<INSTALL_INTERFACE:include/orthotron>)
endfunction()

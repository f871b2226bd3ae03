# Warnings.cmake: the project's warning flags, applied per target with orthotron_warnings(target).
function(orthotron_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow=local -Wnon-virtual-dtor)
  if(ORTHOTRON_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# tokenizer.cmake: orthotron_tokenizer, the tokenizers of the GPT engine (engine/data/tokenizer.h):
# SentencePiece through Debian's libsentencepiece-dev (pkg-config sentencepiece) and the byte
# tokenizer. Torch-free: it needs base/errors.h (header-only) and libsentencepiece, nothing else.
# Included by engine/data/CMakeLists.txt.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)

add_library(orthotron_tokenizer ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cpp)
orthotron_layer(orthotron_tokenizer engine)
# base/errors.h without linking orthotron_base (which brings LibTorch): base's published include root.
target_include_directories(orthotron_tokenizer PUBLIC $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include/base>)
target_link_libraries(orthotron_tokenizer PUBLIC PkgConfig::SENTENCEPIECE PRIVATE Threads::Threads)
orthotron_warnings(orthotron_tokenizer)

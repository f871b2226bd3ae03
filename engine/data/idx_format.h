// idx_format.h: the byte format of Megatron's indexed dataset index (.idx) and token file (.bin):
// token dtype codes, parsing an .idx image held in memory with every structural fact checked, encoding
// one, and decoding little-endian tokens. Pure computation on bytes, no I/O, so the libFuzzer harness
// (tests/fuzz/fuzz_indexed_dataset.cpp) runs exactly the code the dataset reader runs.
// Depends on base/errors.h and the standard library only (no torch, no POSIX).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace orthotron {

/// Megatron's dtype codes (megatron/core/datasets/indexed_dataset.py, DType).
enum class TokenDtype : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8
};

/// Bytes per element: 1, 1, 2, 4, 8, 8, 4, 2. InvalidArgument for a value outside the enum.
size_t token_dtype_size(TokenDtype dtype);
/// "uint8", "int8", ..., "uint16"; "code <n>" for a value outside the enum.
std::string token_dtype_name(TokenDtype dtype);
/// True for the codes a token file may use: the integer ones (1-5, 8); false for floats (6, 7).
bool is_integer_token_dtype(TokenDtype dtype);
/// uint16 when vocab_size < 65500, else int32 (Megatron's DType.optimal_dtype).
/// InvalidArgument when vocab_size <= 0 or above 2^31 (an int32 token could not hold every id).
TokenDtype smallest_token_dtype(int64_t vocab_size);

/// The .idx magic: "MMIDIDX\0\0" (9 bytes), and the only version written and read.
constexpr char kIdxMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kIdxVersion = 1;
/// Bytes before the arrays: magic 9 + version 8 + dtype 1 + sequence count 8 + document count 8.
constexpr size_t kIdxHeaderBytes = 34;

/// A parsed .idx. `pointers[i]` is the byte offset of sequence i in the .bin and equals
/// (sizes[0] + ... + sizes[i-1]) * dtype size; `document_indices` runs 0 = d[0] <= d[1] <= ... = N,
/// document k holding sequences [d[k], d[k+1]).
struct IdxIndex {
  TokenDtype dtype = TokenDtype::kUInt16;
  std::vector<int32_t> sizes;
  std::vector<int64_t> pointers;
  std::vector<int64_t> document_indices;
  int64_t total_tokens = 0;  ///< sum(sizes); the .bin holds total_tokens * dtype size bytes
};

/// Parses an .idx image of `size` bytes. Checks, in this order (each bounding the next allocation by
/// `size`): header length, magic, version = 1, dtype code in 1..8, sequence count N and document
/// count D against the bytes present (the file is exactly 34 + 12N + 8D bytes; trailing bytes, such
/// as a multimodal index's sequence modes, are refused), D >= 1, every size >= 0, pointer[0] = 0 and
/// each pointer = previous + previous size * dtype size (no overflow), document_indices[0] = 0,
/// non-decreasing, last = N. FormatError "indexed dataset index '<source>': field '<name>' ...
/// expected X, got Y" on any inconsistency; never reads outside [data, data + size).
IdxIndex parse_idx(const uint8_t* data, size_t size, const std::string& source);

/// The .idx image of `index` as Megatron's _IndexWriter writes it (header, sizes, pointers,
/// document indices; little-endian, no padding). The inverse of parse_idx for a valid index.
std::vector<uint8_t> encode_idx(const IdxIndex& index);

/// Decodes `count` little-endian tokens of the integer `dtype` starting at `bytes`, widened to int64,
/// into out[0 .. count). The caller guarantees count * token_dtype_size(dtype) readable bytes.
/// InvalidArgument for a float or unknown dtype.
void decode_tokens(TokenDtype dtype, const uint8_t* bytes, int64_t count, int64_t* out);

/// Whether `token` lies in the range of the integer `dtype` (false for float and unknown dtypes).
bool token_fits(TokenDtype dtype, int64_t token);

/// Appends the little-endian bytes of `token` as the integer `dtype` to `out`. InvalidArgument when
/// token_fits is false.
void encode_token(TokenDtype dtype, int64_t token, std::vector<uint8_t>& out);

}  // namespace orthotron

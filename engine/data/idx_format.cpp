// idx_format.cpp: .idx parsing in the order that bounds every allocation by the image's size, the
// encoder, and little-endian token codecs.
#include "engine/data/idx_format.h"

#include <cstring>
#include <limits>

#include "base/errors.h"

namespace orthotron {

namespace {

uint64_t load_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

int64_t load_i64(const uint8_t* p) {
  const uint64_t u = load_u64(p);
  int64_t v = 0;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

int32_t load_i32(const uint8_t* p) {
  uint32_t u = 0;
  for (int i = 0; i < 4; ++i) u |= static_cast<uint32_t>(p[i]) << (8 * i);
  int32_t v = 0;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

void store_u64(uint64_t v, std::vector<uint8_t>& out) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void store_le(uint64_t v, size_t bytes, std::vector<uint8_t>& out) {
  for (size_t i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

[[noreturn]] void fail(const std::string& source, const std::string& field, const std::string& what) {
  throw FormatError("indexed dataset index '" + source + "': field '" + field + "': " + what);
}

std::string at(const char* array, size_t i) {
  return std::string(array) + "[" + std::to_string(i) + "]";
}

/// The signed value of the low `bytes` bytes of `u` (two's complement), without shifting a negative.
int64_t sign_extend(uint64_t u, size_t bytes) {
  if (bytes == 8) {
    int64_t v = 0;
    std::memcpy(&v, &u, sizeof v);
    return v;
  }
  const uint64_t sign = uint64_t{1} << (8 * bytes - 1);
  return static_cast<int64_t>(u ^ sign) - static_cast<int64_t>(sign);
}

}  // namespace

size_t token_dtype_size(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8:
    case TokenDtype::kInt8:
      return 1;
    case TokenDtype::kInt16:
    case TokenDtype::kUInt16:
      return 2;
    case TokenDtype::kInt32:
    case TokenDtype::kFloat32:
      return 4;
    case TokenDtype::kInt64:
    case TokenDtype::kFloat64:
      return 8;
  }
  throw InvalidArgument("token dtype code " + std::to_string(static_cast<int>(dtype)) +
                        " is not a Megatron dtype (expected 1..8)");
}

std::string token_dtype_name(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8:
      return "uint8";
    case TokenDtype::kInt8:
      return "int8";
    case TokenDtype::kInt16:
      return "int16";
    case TokenDtype::kInt32:
      return "int32";
    case TokenDtype::kInt64:
      return "int64";
    case TokenDtype::kFloat64:
      return "float64";
    case TokenDtype::kFloat32:
      return "float32";
    case TokenDtype::kUInt16:
      return "uint16";
  }
  return "code " + std::to_string(static_cast<int>(dtype));
}

bool is_integer_token_dtype(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUInt8:
    case TokenDtype::kInt8:
    case TokenDtype::kInt16:
    case TokenDtype::kInt32:
    case TokenDtype::kInt64:
    case TokenDtype::kUInt16:
      return true;
    case TokenDtype::kFloat64:
    case TokenDtype::kFloat32:
      return false;
  }
  return false;
}

TokenDtype smallest_token_dtype(int64_t vocab_size) {
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 31)) {
    throw InvalidArgument("smallest_token_dtype: vocab_size must be in [1, 2^31], got " + std::to_string(vocab_size));
  }
  return vocab_size < 65500 ? TokenDtype::kUInt16 : TokenDtype::kInt32;
}

IdxIndex parse_idx(const uint8_t* data, size_t size, const std::string& source) {
  if (size < kIdxHeaderBytes) {
    fail(source, "header",
         "expected at least " + std::to_string(kIdxHeaderBytes) + " bytes, got a " + std::to_string(size) +
             "-byte file");
  }
  if (std::memcmp(data, kIdxMagic, sizeof kIdxMagic) != 0) {
    fail(source, "magic", "expected \"MMIDIDX\\0\\0\", got other bytes (not a Megatron .idx)");
  }
  const uint64_t version = load_u64(data + 9);
  if (version != kIdxVersion) {
    fail(source, "version", "expected " + std::to_string(kIdxVersion) + ", got " + std::to_string(version));
  }
  IdxIndex index;
  const uint8_t code = data[17];
  if (code < 1 || code > 8) fail(source, "dtype", "expected a code in 1..8, got " + std::to_string(code));
  index.dtype = static_cast<TokenDtype>(code);
  const uint64_t elem = token_dtype_size(index.dtype);
  const uint64_t n = load_u64(data + 18);
  const uint64_t d = load_u64(data + 26);
  const uint64_t body = size - kIdxHeaderBytes;
  if (n > body / 12) {
    fail(source, "sequence_count",
         std::to_string(n) + " sequences need " + (n > UINT64_MAX / 12 ? "more than 2^64" : std::to_string(n * 12)) +
             " bytes of sizes and pointers, but only " + std::to_string(body) + " bytes follow the header");
  }
  if (d > (body - 12 * n) / 8) {
    fail(source, "document_count",
         std::to_string(d) + " documents need " + (d > UINT64_MAX / 8 ? "more than 2^64" : std::to_string(d * 8)) +
             " bytes of document indices, but only " + std::to_string(body - 12 * n) + " bytes are left");
  }
  if (d == 0) fail(source, "document_count", "expected at least 1 (the leading 0), got 0");
  const uint64_t expected = kIdxHeaderBytes + 12 * n + 8 * d;
  if (size != expected) {
    fail(source, "file size",
         "expected " + std::to_string(expected) + " bytes for " + std::to_string(n) + " sequences and " +
             std::to_string(d) + " document indices, got " + std::to_string(size) + " (" +
             std::to_string(size - expected) + " trailing bytes; a multimodal index is not supported)");
  }
  const uint8_t* sizes = data + kIdxHeaderBytes;
  const uint8_t* pointers = sizes + 4 * n;
  const uint8_t* docs = pointers + 8 * n;
  index.sizes.resize(n);
  index.pointers.resize(n);
  index.document_indices.resize(d);
  int64_t offset = 0;  // bytes before sequence i: the pointer it must have
  for (uint64_t i = 0; i < n; ++i) {
    const int32_t len = load_i32(sizes + 4 * i);
    if (len < 0) fail(source, at("sizes", i), "expected >= 0, got " + std::to_string(len));
    const int64_t ptr = load_i64(pointers + 8 * i);
    if (ptr != offset) {
      fail(source, at("pointers", i),
           "expected " + std::to_string(offset) + ", got " + std::to_string(ptr) +
               " (each pointer is the previous one plus the previous size x " + std::to_string(elem) + " bytes)");
    }
    index.sizes[i] = len;
    index.pointers[i] = ptr;
    int64_t bytes = 0;
    if (__builtin_mul_overflow(static_cast<int64_t>(len), static_cast<int64_t>(elem), &bytes) ||
        __builtin_add_overflow(offset, bytes, &offset)) {
      fail(source, at("sizes", i), "the token bytes up to this sequence overflow int64");
    }
  }
  index.total_tokens = offset / static_cast<int64_t>(elem);
  int64_t previous = 0;
  for (uint64_t k = 0; k < d; ++k) {
    const int64_t v = load_i64(docs + 8 * k);
    if (k == 0 && v != 0) fail(source, at("document_indices", 0), "expected 0, got " + std::to_string(v));
    if (v < previous) {
      fail(source, at("document_indices", k),
           "expected non-decreasing (>= " + std::to_string(previous) + "), got " + std::to_string(v));
    }
    if (static_cast<uint64_t>(v) > n) {
      fail(source, at("document_indices", k),
           "expected at most the sequence count " + std::to_string(n) + ", got " + std::to_string(v));
    }
    index.document_indices[k] = v;
    previous = v;
  }
  if (static_cast<uint64_t>(previous) != n) {
    fail(source, at("document_indices", d - 1),
         "expected the last document index to equal the sequence count " + std::to_string(n) + ", got " +
             std::to_string(previous));
  }
  return index;
}

std::vector<uint8_t> encode_idx(const IdxIndex& index) {
  const size_t n = index.sizes.size();
  if (index.pointers.size() != n) {
    throw InvalidArgument("encode_idx: " + std::to_string(n) + " sizes but " + std::to_string(index.pointers.size()) +
                          " pointers");
  }
  std::vector<uint8_t> out;
  out.reserve(kIdxHeaderBytes + 12 * n + 8 * index.document_indices.size());
  for (const char c : kIdxMagic) out.push_back(static_cast<uint8_t>(c));
  store_u64(kIdxVersion, out);
  out.push_back(static_cast<uint8_t>(index.dtype));
  store_u64(n, out);
  store_u64(index.document_indices.size(), out);
  for (const int32_t s : index.sizes) store_le(static_cast<uint32_t>(s), 4, out);
  for (const int64_t p : index.pointers) store_u64(static_cast<uint64_t>(p), out);
  for (const int64_t k : index.document_indices) store_u64(static_cast<uint64_t>(k), out);
  return out;
}

void decode_tokens(TokenDtype dtype, const uint8_t* bytes, int64_t count, int64_t* out) {
  if (!is_integer_token_dtype(dtype)) {
    throw InvalidArgument("decode_tokens: " + token_dtype_name(dtype) + " is not an integer token dtype");
  }
  const size_t elem = token_dtype_size(dtype);
  const bool is_signed = dtype != TokenDtype::kUInt8 && dtype != TokenDtype::kUInt16;
  for (int64_t t = 0; t < count; ++t) {
    const uint8_t* p = bytes + static_cast<size_t>(t) * elem;
    uint64_t u = 0;
    for (size_t i = 0; i < elem; ++i) u |= static_cast<uint64_t>(p[i]) << (8 * i);
    out[t] = is_signed ? sign_extend(u, elem) : static_cast<int64_t>(u);
  }
}

bool token_fits(TokenDtype dtype, int64_t token) {
  switch (dtype) {
    case TokenDtype::kUInt8:
      return token >= 0 && token <= 255;
    case TokenDtype::kInt8:
      return token >= -128 && token <= 127;
    case TokenDtype::kInt16:
      return token >= -32768 && token <= 32767;
    case TokenDtype::kUInt16:
      return token >= 0 && token <= 65535;
    case TokenDtype::kInt32:
      return token >= std::numeric_limits<int32_t>::min() && token <= std::numeric_limits<int32_t>::max();
    case TokenDtype::kInt64:
      return true;
    case TokenDtype::kFloat64:
    case TokenDtype::kFloat32:
      return false;
  }
  return false;
}

void encode_token(TokenDtype dtype, int64_t token, std::vector<uint8_t>& out) {
  if (!token_fits(dtype, token)) {
    throw InvalidArgument("token " + std::to_string(token) + " does not fit token dtype " + token_dtype_name(dtype));
  }
  store_le(static_cast<uint64_t>(token), token_dtype_size(dtype), out);
}

}  // namespace orthotron

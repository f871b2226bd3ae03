// test_safetensors.cpp: the safetensors writer and reader: round trip of every dtype, header
// layout, and rejection of each kind of malformed file.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/errors.h"
#include "base/safetensors.h"
#include "test_util.h"

namespace orthotron {
namespace {

std::string temp_path(const std::string& name) {
  return orthotron::testing::unique_temp_path(name);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string with_header(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + data;
}

void expect_format_error(const std::string& bytes, const std::string& needle) {
  const std::string path = temp_path("bad");
  write_bytes(path, bytes);
  try {
    load_safetensors(path);
    ADD_FAILURE() << "expected FormatError containing '" << needle << "'";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "message must name the file: " << e.what();
  }
  std::remove(path.c_str());
}

TEST(Safetensors, RoundTripsEveryDtype) {
  at::manual_seed(0);
  std::map<std::string, at::Tensor> tensors = {
      {"f64", at::randn({3, 4}, at::kDouble)},
      {"f32", at::randn({5}, at::kFloat)},
      {"f16", at::randn({2, 3}).to(at::kHalf)},
      {"bf16", at::randn({2, 2, 2}).to(at::kBFloat16)},
      {"i64", at::arange(7, at::kLong)},
      {"i32", at::arange(6, at::kInt).reshape({2, 3})},
      {"i16", at::arange(4, at::kShort)},
      {"i8", at::arange(-3, 3, at::kChar)},
      {"u8", at::arange(9, at::kByte)},
      {"bool", at::tensor({1, 0, 1}, at::kByte).to(at::kBool)},
      {"empty", at::zeros({0, 4})},
      {"scalar", at::scalar_tensor(2.5)},
      {"noncontig", at::randn({4, 6}).t()},
  };
  const std::string path = temp_path("roundtrip.safetensors");
  save_safetensors(path, tensors, {{"step", "42"}});
  const auto loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const auto& got = loaded.tensors.at(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(got, t)) << name;
  }
  EXPECT_EQ(loaded.metadata.at("step"), "42");
  EXPECT_EQ(loaded.metadata.at("format"), "pt");
  // Header length is a multiple of 8 and the header is valid JSON padded with spaces.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  std::remove(path.c_str());
}

TEST(Safetensors, WriteIsAtomicAndLeavesNoTempFile) {
  const std::string path = temp_path("atomic.safetensors");
  save_safetensors(path, {{"a", at::ones({2})}});
  save_safetensors(path, {{"b", at::zeros({3})}});
  EXPECT_EQ(load_safetensors(path).tensors.count("b"), 1u);
  EXPECT_EQ(load_safetensors(path).tensors.count("a"), 0u);
  std::ifstream tmp(path + ".tmp");
  EXPECT_FALSE(tmp.good());
  std::remove(path.c_str());
}

TEST(Safetensors, RejectsUnsupportedDtypeNamingTheTensor) {
  try {
    save_safetensors(temp_path("complex.safetensors"), {{"z", at::zeros({2}, at::kComplexFloat)}});
    ADD_FAILURE() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("'z'"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string f32x2 = R"("dtype":"F32","shape":[2])";
  const std::string data8(8, '\0');
  expect_format_error("abc", "shorter than the 8-byte header length");
  expect_format_error(with_header("{}", "").substr(0, 8) + "{", "exceeds");
  expect_format_error(with_header("{not json}", ""), "invalid JSON");
  expect_format_error(with_header("[1,2]", ""), "must be a JSON object");
  expect_format_error(with_header(R"({"a":{"dtype":"Q8","shape":[2],"data_offsets":[0,8]}})", data8), "Q8");
  expect_format_error(with_header(R"({"a":{)" + f32x2 + R"(,"data_offsets":[0,4]}})", data8.substr(0, 4)),
                      "needs more bytes than the file's 4-byte data section");
  expect_format_error(with_header(R"({"a":{)" + f32x2 + R"(,"data_offsets":[0,8]}})", data8.substr(0, 4)),
                      "needs more bytes than the file's 4-byte data section");
  expect_format_error(with_header(R"({"a":{)" + f32x2 + R"(,"data_offsets":[4,12]}})", data8 + data8),
                      "starts at data byte 4, expected 0 (gap)");
  expect_format_error(
      with_header(R"({"a":{)" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 + R"(,"data_offsets":[4,12]}})",
                  data8 + data8),
      "overlaps the tensor before it");
  expect_format_error(with_header(R"({"a":{)" + f32x2 + R"(,"data_offsets":[0,8]}})", data8 + "xx"), "trailing bytes");
  expect_format_error(with_header(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", data8), "has no 'shape'");
  expect_format_error(with_header(R"({"__metadata__":{"k":3}})", ""), "must be a string");
  try {
    load_safetensors(temp_path("missing.safetensors"));
    ADD_FAILURE() << "expected FormatError for a missing file";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
}

// ---- hostile files found accepted or mishandled before the hardening, each with its guard ----

TEST(SafetensorsHostile, DirectoryIsAClearError) {
  const std::string dir = ::testing::TempDir();
  try {
    load_safetensors(dir);
    ADD_FAILURE() << "a directory loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsHostile, ManyEntriesOnTheSameBytesAreRefusedBeforeAnyAllocation) {
  // 1000 entries claim the same 1 MB: the overlap is found from the header alone.
  const std::string data(1 << 20, '\0');
  std::string header = "{";
  for (int i = 0; i < 1000; ++i) {
    header += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
              R"(":{"dtype":"U8","shape":[1048576],"data_offsets":[0,1048576]})";
  }
  header += "}";
  expect_format_error(with_header(header, data), "overlaps the tensor before it");
}

TEST(SafetensorsHostile, ShapesThatOverflowInt64AreNamed) {
  expect_format_error(with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
                                  std::string(8, 'x')),
                      "tensor 'a' shape [4294967296,4294967296,16] needs more bytes");
  expect_format_error(
      with_header(R"({"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", std::string(8, 'x')),
      "exceeds int64");
  expect_format_error(with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, 'x')),
                      "shape[0] is negative");
}

TEST(SafetensorsHostile, FieldsOfTheWrongJsonTypeAreNamed) {
  const std::string d8(8, 'x');
  expect_format_error(with_header(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", d8),
                      "dtype must be a string");
  expect_format_error(with_header(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", d8),
                      "shape must be an array");
  expect_format_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", d8),
                      "data_offsets[1] must be a non-negative integer");
  expect_format_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", d8),
                      "data_offsets must be an array of 2 integers");
  expect_format_error(with_header(R"({"a":[1]})", d8), "tensor 'a' must be an object");
  expect_format_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", d8),
                      "unknown field 'x'");
}

TEST(SafetensorsHostile, DuplicateKeysAndDeepNestingAreRefused) {
  const std::string d8(8, 'x');
  expect_format_error(
      with_header(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
          d8),
      "duplicate JSON key 'a'");
  expect_format_error(with_header(std::string(100000, '[') + std::string(100000, ']'), ""), "nested deeper than 64");
}

TEST(SafetensorsHostile, HeaderLengthAboveTheCapIsRefusedBeforeReading) {
  std::string bytes(8, '\0');
  const uint64_t huge = 200ull * 1000 * 1000;
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((huge >> (8 * i)) & 0xff);
  expect_format_error(bytes + "{}", "above the limit of 100000000 bytes");
  bytes[7] = '\x7f';  // about 9e18: far beyond the file
  expect_format_error(bytes + "{}", "above the limit");
}

TEST(SafetensorsHostile, AFailedWriteLeavesThePreviousFileAndNoTemporary) {
  const std::string path = temp_path("atomic");
  save_safetensors(path, {{"a", at::ones({2})}});
  const std::string before = read_bytes(path);
  // An undefined tensor makes the writer fail after the temporary file would have been made.
  EXPECT_THROW(save_safetensors(path, {{"a", at::ones({3})}, {"b", at::Tensor()}}), FormatError);
  EXPECT_EQ(read_bytes(path), before);
  const std::string stem = std::filesystem::path(path).filename().string() + ".tmp.";
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
    EXPECT_NE(entry.path().filename().string().rfind(stem, 0), 0u) << "temporary left behind: " << entry.path();
  }
  std::remove(path.c_str());
  // Writing over a directory is a clear error.
  EXPECT_THROW(save_safetensors(::testing::TempDir(), {{"a", at::ones({2})}}), FormatError);
}

}  // namespace
}  // namespace orthotron

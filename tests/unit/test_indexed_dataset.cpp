// test_indexed_dataset.cpp: the Megatron indexed dataset reader and builder against files written
// field by field by an independent writer in this test (std::ofstream, following the byte format of
// ../shared/design/ecosystem.md), hostile files refused with the field named, and, where the
// configured Python has numpy, a numpy reader of the same files.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "engine/data/indexed_dataset.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;
using orthotron::testing::unique_temp_path;
using Tokens = std::vector<int64_t>;

// ---- the independent writer: every field by hand, little-endian, no padding ----

void put_le(std::ofstream& f, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) f.put(static_cast<char>((value >> (8 * i)) & 0xff));
}

struct HandDataset {
  uint8_t code = 8;
  int item = 2;
  std::vector<Tokens> sequences;
  std::vector<int64_t> documents;  ///< document_indices; empty: 0..N (one sequence per document)
};

/// Writes prefix.idx and prefix.bin of `d`; returns the prefix.
std::string write_hand(const std::string& prefix, const HandDataset& d) {
  std::vector<int64_t> docs = d.documents;
  if (docs.empty()) {
    for (size_t k = 0; k <= d.sequences.size(); ++k) docs.push_back(static_cast<int64_t>(k));
  }
  std::ofstream bin(prefix + ".bin", std::ios::binary | std::ios::trunc);
  for (const auto& s : d.sequences) {
    for (int64_t t : s) put_le(bin, static_cast<uint64_t>(t), d.item);
  }
  std::ofstream idx(prefix + ".idx", std::ios::binary | std::ios::trunc);
  idx.write("MMIDIDX\0\0", 9);
  put_le(idx, 1, 8);  // version
  put_le(idx, d.code, 1);
  put_le(idx, d.sequences.size(), 8);
  put_le(idx, docs.size(), 8);
  for (const auto& s : d.sequences) put_le(idx, s.size(), 4);
  uint64_t pointer = 0;
  for (const auto& s : d.sequences) {
    put_le(idx, pointer, 8);
    pointer += s.size() * static_cast<uint64_t>(d.item);
  }
  for (int64_t k : docs) put_le(idx, static_cast<uint64_t>(k), 8);
  return prefix;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void patch_le(std::string& bytes, size_t at, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) bytes[at + static_cast<size_t>(i)] = static_cast<char>((value >> (8 * i)) & 0xff);
}

struct DtypeCase {
  TokenDtype dtype;
  int item;
  Tokens extremes;  ///< values at the edges of the dtype's range
};

std::vector<DtypeCase> dtype_cases() {
  return {
      {TokenDtype::kUInt8, 1, {0, 1, 254, 255}},
      {TokenDtype::kInt8, 1, {-128, -1, 0, 127}},
      {TokenDtype::kInt16, 2, {-32768, -1, 300, 32767}},
      {TokenDtype::kUInt16, 2, {0, 256, 65499, 65535}},
      {TokenDtype::kInt32, 4, {std::numeric_limits<int32_t>::min(), -7, 70000, std::numeric_limits<int32_t>::max()}},
      {TokenDtype::kInt64,
       8,
       {std::numeric_limits<int64_t>::min(), -(int64_t{1} << 40), int64_t{1} << 40,
        std::numeric_limits<int64_t>::max()}},
  };
}

/// Several documents for a dtype: the extremes, an empty document, and a run of small ids.
std::vector<Tokens> documents_for(const DtypeCase& c) {
  Tokens run;
  for (int64_t t = 0; t < 37; ++t) run.push_back((t * 7) % 100);
  return {c.extremes, {}, run, {c.extremes[3]}, {5, 4, 3}};
}

TEST(IndexedDataset, ReadsEveryDtypeWrittenByHand) {
  for (const DtypeCase& c : dtype_cases()) {
    SCOPED_TRACE(token_dtype_name(c.dtype));
    HandDataset d;
    d.code = static_cast<uint8_t>(c.dtype);
    d.item = c.item;
    d.sequences = documents_for(c);
    const std::string prefix = write_hand(unique_temp_path(token_dtype_name(c.dtype)), d);
    const IndexedDataset ds(prefix);
    EXPECT_EQ(ds.dtype(), c.dtype);
    ASSERT_EQ(ds.num_sequences(), d.sequences.size());
    EXPECT_EQ(ds.num_documents(), d.sequences.size());
    int64_t total = 0;
    for (size_t i = 0; i < d.sequences.size(); ++i) {
      ASSERT_EQ(ds.sequence_length(i), static_cast<int64_t>(d.sequences[i].size()));
      Tokens got;
      ds.read(i, 0, ds.sequence_length(i), got);
      EXPECT_EQ(got, d.sequences[i]) << "sequence " << i;
      EXPECT_EQ(ds.sequence_token_begin(i), total);
      total += static_cast<int64_t>(d.sequences[i].size());
    }
    EXPECT_EQ(ds.total_tokens(), total);
    std::vector<int64_t> expected_docs;
    for (size_t k = 0; k <= d.sequences.size(); ++k) expected_docs.push_back(static_cast<int64_t>(k));
    EXPECT_EQ(ds.document_indices(), expected_docs);
  }
}

TEST(IndexedDataset, PartialReadsAppendAndRejectOutOfRange) {
  HandDataset d;
  d.code = 4;
  d.item = 4;
  d.sequences = {{10, 11, 12, 13, 14}, {20, 21}};
  const IndexedDataset ds(write_hand(unique_temp_path("partial"), d));
  Tokens out = {-1};
  ds.read(0, 1, 3, out);
  ds.read(1, 2, 0, out);
  ds.read(1, 1, 1, out);
  EXPECT_EQ(out, (Tokens{-1, 11, 12, 13, 21}));
  Tokens stream(7);
  ds.read_tokens(0, 7, stream.data());
  EXPECT_EQ(stream, (Tokens{10, 11, 12, 13, 14, 20, 21}));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { ds.read(2, 0, 0, out); }), "sequence 2"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { ds.read(0, 3, 3, out); }), "outside its 5 tokens"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { ds.read(0, -1, 1, out); }), "offset -1"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { ds.read_tokens(5, 3, stream.data()); }), "[0, 7)"));
  EXPECT_EQ(out.size(), 5u) << "a refused read appends nothing";
}

TEST(IndexedDataset, DocumentsOfSeveralSequences) {
  HandDataset d;
  d.code = 8;
  d.sequences = {{1, 2}, {3}, {}, {4, 5, 6}, {7}};
  d.documents = {0, 2, 2, 4, 5};  // documents: seq {0,1}, {}, {2,3}, {4}
  const IndexedDataset ds(write_hand(unique_temp_path("multi"), d));
  EXPECT_EQ(ds.num_documents(), 4u);
  EXPECT_EQ(ds.document_indices(), d.documents);
  const std::vector<int64_t> begins = {0, 3, 3, 6, 7};
  for (size_t k = 0; k <= 4; ++k) EXPECT_EQ(ds.document_token_begin(k), begins[k]) << "document " << k;
  EXPECT_THROW(ds.document_token_begin(5), InvalidArgument);
}

TEST(IndexedDataset, BuilderWritesTheSameBytesAsTheHandWriter) {
  for (const DtypeCase& c : dtype_cases()) {
    if (c.dtype == TokenDtype::kInt64) continue;  // the builder takes int32 tokens; int64 below
    SCOPED_TRACE(token_dtype_name(c.dtype));
    HandDataset d;
    d.code = static_cast<uint8_t>(c.dtype);
    d.item = c.item;
    d.sequences = documents_for(c);
    const std::string hand = write_hand(unique_temp_path("hand_" + token_dtype_name(c.dtype)), d);
    const std::string built = unique_temp_path("built_" + token_dtype_name(c.dtype));
    IndexedDatasetBuilder b(built, c.dtype);
    for (const auto& s : d.sequences) b.add_document(std::vector<int32_t>(s.begin(), s.end()));
    EXPECT_EQ(b.documents(), static_cast<int64_t>(d.sequences.size()));
    EXPECT_FALSE(std::filesystem::exists(built + ".idx")) << "nothing under the real names before finalize";
    EXPECT_FALSE(std::filesystem::exists(built + ".bin"));
    b.finalize();
    EXPECT_EQ(read_bytes(built + ".idx"), read_bytes(hand + ".idx"));
    EXPECT_EQ(read_bytes(built + ".bin"), read_bytes(hand + ".bin"));
  }
  HandDataset d;
  d.code = 5;
  d.item = 8;
  d.sequences = {{std::numeric_limits<int32_t>::min(), 0, std::numeric_limits<int32_t>::max()}, {}};
  const std::string hand = write_hand(unique_temp_path("hand64"), d);
  const std::string built = unique_temp_path("built64");
  IndexedDatasetBuilder b(built, TokenDtype::kInt64);
  for (const auto& s : d.sequences) b.add_document(std::vector<int32_t>(s.begin(), s.end()));
  b.finalize();
  EXPECT_EQ(read_bytes(built + ".idx"), read_bytes(hand + ".idx"));
  EXPECT_EQ(read_bytes(built + ".bin"), read_bytes(hand + ".bin"));
}

TEST(IndexedDataset, BuilderRefusesTokensOutsideTheDtypeAndLeavesNoFileWhenAbandoned) {
  const std::string prefix = unique_temp_path("refuse");
  {
    IndexedDatasetBuilder b(prefix, TokenDtype::kUInt16);
    b.add_document({1, 2, 3});
    EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { b.add_document({4, 65536}); }), "65536"));
    EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { b.add_document({-1}); }), "does not fit uint16"));
    EXPECT_EQ(b.documents(), 1);
    EXPECT_EQ(b.tokens(), 3);
  }  // abandoned: the temporaries are removed
  const std::filesystem::path p(prefix);
  for (const auto& entry : std::filesystem::directory_iterator(p.parent_path())) {
    EXPECT_NE(entry.path().filename().string().rfind(p.filename().string(), 0), 0u) << entry.path();
  }
  EXPECT_THROW((IndexedDatasetBuilder{prefix, TokenDtype::kFloat32}), InvalidArgument);
  IndexedDatasetBuilder b(prefix, TokenDtype::kUInt8);
  b.add_document({7});
  b.finalize();
  EXPECT_THROW(b.add_document({1}), InvalidArgument);
  EXPECT_THROW(b.finalize(), InvalidArgument);
  const IndexedDataset ds(prefix);
  EXPECT_EQ(ds.total_tokens(), 1);
}

TEST(IndexedDataset, EmptyDatasetAndEmptyBin) {
  const std::string prefix = unique_temp_path("empty");
  IndexedDatasetBuilder b(prefix, TokenDtype::kUInt16);
  b.finalize();
  const IndexedDataset ds(prefix);
  EXPECT_EQ(ds.num_sequences(), 0u);
  EXPECT_EQ(ds.num_documents(), 0u);
  EXPECT_EQ(ds.total_tokens(), 0);
  // Empty documents only: still 0 tokens, empty .bin accepted.
  HandDataset d;
  d.sequences = {{}, {}};
  EXPECT_EQ(IndexedDataset(write_hand(unique_temp_path("empty_docs"), d)).num_documents(), 2u);
}

TEST(IndexedDataset, SmallestTokenDtypeFollowsMegatron) {
  EXPECT_EQ(smallest_token_dtype(1), TokenDtype::kUInt16);
  EXPECT_EQ(smallest_token_dtype(65499), TokenDtype::kUInt16);
  EXPECT_EQ(smallest_token_dtype(65500), TokenDtype::kInt32);
  EXPECT_EQ(smallest_token_dtype(128256), TokenDtype::kInt32);
  EXPECT_THROW(smallest_token_dtype(0), InvalidArgument);
  EXPECT_EQ(token_dtype_size(TokenDtype::kUInt16), 2u);
  EXPECT_EQ(token_dtype_size(TokenDtype::kFloat64), 8u);
}

// ---- hostile files: each refused with FormatError naming the field ----

struct Hostile {
  const char* name;
  void (*corrupt)(std::string& idx, std::string& bin);
  std::vector<const char*> expect;  ///< substrings of the message
  bool idx_fault = true;            ///< parse_idx alone refuses the .idx (false: the .bin is at fault)
};

/// A valid base: 3 uint16 sequences of 2, 0, 3 tokens; offsets: sizes at 34, pointers at 46, docs at 70.
HandDataset hostile_base() {
  HandDataset d;
  d.sequences = {{1, 2}, {}, {3, 4, 5}};
  return d;
}

TEST(IndexedDataset, HostileFilesAreRefusedNamingTheField) {
  const std::vector<Hostile> cases = {
      {"truncated_header", [](std::string& idx, std::string&) { idx.resize(20); }, {"'header'", "20-byte"}},
      {"truncated_arrays", [](std::string& idx, std::string&) { idx.resize(60); }, {"'sequence_count'"}},
      {"truncated_docs", [](std::string& idx, std::string&) { idx.resize(idx.size() - 8); }, {"'document_count'"}},
      {"wrong_magic", [](std::string& idx, std::string&) { idx[0] = 'X'; }, {"'magic'"}},
      {"wrong_version",
       [](std::string& idx, std::string&) { patch_le(idx, 9, 2, 8); },
       {"'version'", "expected 1, got 2"}},
      {"unknown_dtype", [](std::string& idx, std::string&) { idx[17] = 9; }, {"'dtype'", "got 9"}},
      {"zero_dtype", [](std::string& idx, std::string&) { idx[17] = 0; }, {"'dtype'", "got 0"}},
      {"huge_sequence_count",
       [](std::string& idx, std::string&) { patch_le(idx, 18, uint64_t{1} << 62, 8); },
       {"'sequence_count'"}},
      {"sequence_count_plus_one",
       [](std::string& idx, std::string&) { patch_le(idx, 18, 4, 8); },
       {"'document_count'"}},
      {"huge_document_count",
       [](std::string& idx, std::string&) { patch_le(idx, 26, ~uint64_t{0}, 8); },
       {"'document_count'"}},
      {"zero_document_count",
       [](std::string& idx, std::string&) {
         patch_le(idx, 26, 0, 8);
         idx.resize(idx.size() - 32);
       },
       {"'document_count'", "at least 1"}},
      {"trailing_bytes",
       [](std::string& idx, std::string&) { idx += std::string(3, '\0'); },
       {"'file size'", "3 trailing bytes"}},
      {"negative_size",
       [](std::string& idx, std::string&) { patch_le(idx, 38, 0xffffffff, 4); },
       {"'sizes[1]'", "got -1"}},
      {"first_pointer_not_zero",
       [](std::string& idx, std::string&) { patch_le(idx, 46, 2, 8); },
       {"'pointers[0]'", "expected 0, got 2"}},
      {"non_monotone_pointers",
       [](std::string& idx, std::string&) { patch_le(idx, 62, 0, 8); },
       {"'pointers[2]'", "expected 4, got 0"}},
      {"size_inconsistent_with_pointers",
       [](std::string& idx, std::string&) { patch_le(idx, 34, 3, 4); },
       {"'pointers[1]'", "expected 6, got 4"}},
      {"bin_shorter",
       [](std::string&, std::string& bin) { bin.resize(bin.size() - 2); },
       {".bin'", "expected 10 bytes", "got 8"},
       false},
      {"bin_longer",
       [](std::string&, std::string& bin) { bin += "xx"; },
       {".bin'", "expected 10 bytes", "got 12"},
       false},
      {"empty_bin_with_tokens",
       [](std::string&, std::string& bin) { bin.clear(); },
       {"expected 10 bytes", "got 0"},
       false},
      {"documents_not_ending_at_n",
       [](std::string& idx, std::string&) { patch_le(idx, 94, 2, 8); },
       {"'document_indices[3]'", "sequence count 3, got 2"}},
      {"documents_not_starting_at_0",
       [](std::string& idx, std::string&) { patch_le(idx, 70, 1, 8); },
       {"'document_indices[0]'", "expected 0, got 1"}},
      {"documents_decreasing",
       [](std::string& idx, std::string&) { patch_le(idx, 86, 0, 8); },
       {"'document_indices[2]'", "non-decreasing"}},
      {"document_past_n",
       [](std::string& idx, std::string&) { patch_le(idx, 86, 7, 8); },
       {"'document_indices[2]'", "at most the sequence count 3, got 7"}},
  };
  for (const Hostile& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string prefix = write_hand(unique_temp_path(c.name), hostile_base());
    // The base itself is valid: each case fails for its corruption alone.
    ASSERT_NO_THROW({ IndexedDataset ds(prefix); });
    std::string idx = read_bytes(prefix + ".idx");
    std::string bin = read_bytes(prefix + ".bin");
    c.corrupt(idx, bin);
    write_bytes(prefix + ".idx", idx);
    write_bytes(prefix + ".bin", bin);
    const std::string msg = thrown_message<FormatError>([&] { IndexedDataset ds(prefix); });
    EXPECT_TRUE(contains(msg, prefix)) << msg;
    for (const char* want : c.expect) EXPECT_TRUE(contains(msg, want)) << "missing '" << want << "' in: " << msg;
    // The in-memory parser refuses every .idx corruption by itself, with the same message.
    const auto parse = [&] { parse_idx(reinterpret_cast<const uint8_t*>(idx.data()), idx.size(), prefix + ".idx"); };
    if (c.idx_fault) {
      EXPECT_EQ(thrown_message<FormatError>(parse), msg);
    } else {
      EXPECT_NO_THROW(parse());
    }
  }
}

TEST(IndexedDataset, FloatDtypesParseButAreNotTokenFiles) {
  HandDataset d;
  d.code = 7;  // float32: a valid Megatron .idx, but not a token file
  d.item = 4;
  d.sequences = {{0, 1}};
  const std::string prefix = write_hand(unique_temp_path("float"), d);
  const std::string idx = read_bytes(prefix + ".idx");
  EXPECT_EQ(parse_idx(reinterpret_cast<const uint8_t*>(idx.data()), idx.size(), "f").dtype, TokenDtype::kFloat32);
  const std::string msg = thrown_message<FormatError>([&] { IndexedDataset ds(prefix); });
  EXPECT_TRUE(contains(msg, "'dtype'") && contains(msg, "float32")) << msg;
}

TEST(IndexedDataset, MissingFilesNameThePath) {
  const std::string prefix = unique_temp_path("missing");
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { IndexedDataset ds(prefix); }), prefix + ".idx"));
  write_hand(prefix, hostile_base());
  std::remove((prefix + ".bin").c_str());
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { IndexedDataset ds(prefix); }), prefix + ".bin"));
}

TEST(IndexedDataset, MemoryViewValidatesLikeAFile) {
  HandDataset d;
  d.code = 4;
  d.item = 4;
  d.sequences = {{5, -6}, {7}};
  const std::string prefix = write_hand(unique_temp_path("view"), d);
  const std::string idx = read_bytes(prefix + ".idx");
  const std::string bin = read_bytes(prefix + ".bin");
  IdxIndex index = parse_idx(reinterpret_cast<const uint8_t*>(idx.data()), idx.size(), prefix + ".idx");
  EXPECT_EQ(encode_idx(index), std::vector<uint8_t>(idx.begin(), idx.end()));
  const IndexedDataset view(index, reinterpret_cast<const uint8_t*>(bin.data()), bin.size(), "view");
  Tokens got;
  view.read(0, 0, 2, got);
  view.read(1, 0, 1, got);
  EXPECT_EQ(got, (Tokens{5, -6, 7}));
  EXPECT_THROW((IndexedDataset{index, reinterpret_cast<const uint8_t*>(bin.data()), bin.size() - 4, "view"}),
               FormatError);
  index.pointers[1] = 4;
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] {
                         IndexedDataset ds(index, reinterpret_cast<const uint8_t*>(bin.data()), bin.size(), "view");
                       }),
                       "'pointers[1]'"));
}

// ---- cross-check: a numpy reader (Megatron's reading of the same bytes), where numpy is available ----

int run_command(const std::string& cmd, std::string& output) {
  FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  const int raw = ::pclose(pipe);
  return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
}

constexpr const char* kNumpyReader = R"(import sys, numpy as np
p = sys.argv[1]
b = open(p + '.idx', 'rb').read()
assert b[:9] == b'MMIDIDX\x00\x00' and int(np.frombuffer(b, '<u8', 1, 9)[0]) == 1
n, d = (int(x) for x in np.frombuffer(b, '<u8', 2, 18))
dt = {1: '<u1', 2: '<i1', 3: '<i2', 4: '<i4', 5: '<i8', 8: '<u2'}[b[17]]
sizes = np.frombuffer(b, '<i4', n, 34)
pointers = np.frombuffer(b, '<i8', n, 34 + 4 * n)
docs = np.frombuffer(b, '<i8', d, 34 + 12 * n)
data = open(p + '.bin', 'rb').read()
for i in range(n):
    print(' '.join(str(int(t)) for t in np.frombuffer(data, dt, int(sizes[i]), int(pointers[i]))))
print('docs ' + ' '.join(str(int(k)) for k in docs))
)";

TEST(IndexedDataset, NumpyReaderAgrees) {
  const char* env = std::getenv("ORTHOTRON_PYTHON");
  const std::string python = env ? env : ORTHOTRON_PYTHON_DEFAULT;
  if (python.empty()) GTEST_SKIP() << "ORTHOTRON_PYTHON is not set";
  std::string probe;
  if (run_command(python + " -c 'import numpy'", probe) != 0) GTEST_SKIP() << python << " has no numpy: " << probe;
  const std::string script = unique_temp_path("reader.py");
  write_bytes(script, kNumpyReader);
  for (const DtypeCase& c : dtype_cases()) {
    SCOPED_TRACE(token_dtype_name(c.dtype));
    const std::string prefix = unique_temp_path("np_" + token_dtype_name(c.dtype));
    IndexedDatasetBuilder b(prefix, c.dtype);
    std::vector<Tokens> docs = documents_for(c);
    if (c.dtype == TokenDtype::kInt64) docs[0] = {std::numeric_limits<int32_t>::min(), -1, 0, 5};
    for (const auto& s : docs) b.add_document(std::vector<int32_t>(s.begin(), s.end()));
    b.finalize();
    std::string out;
    ASSERT_EQ(run_command(python + " " + script + " " + prefix, out), 0) << out;
    const IndexedDataset ds(prefix);
    std::ostringstream expected;
    for (size_t i = 0; i < ds.num_sequences(); ++i) {
      Tokens t;
      ds.read(i, 0, ds.sequence_length(i), t);
      for (size_t j = 0; j < t.size(); ++j) expected << (j ? " " : "") << t[j];
      expected << "\n";
    }
    expected << "docs";
    for (int64_t k : ds.document_indices()) expected << " " << k;
    expected << "\n";
    EXPECT_EQ(out, expected.str());
  }
}

}  // namespace
}  // namespace orthotron

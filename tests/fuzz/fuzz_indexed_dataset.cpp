// fuzz_indexed_dataset.cpp: libFuzzer harness of the Megatron .idx reader (engine/data/idx_format.cpp)
// and the dataset's bounds-checked reads (engine/data/indexed_dataset.cpp). The input is a whole .idx
// held in memory. FormatError is the expected way to refuse it; any other exception, a sanitizer
// report, a hang or a blown memory limit is a finding. An index that parses must satisfy every fact
// the reader relies on (checked below, abort() when one does not hold); then, when its .bin would be
// small, a synthetic .bin of exactly the right size is made and every sequence is read through
// IndexedDataset, so a wrong accept that would read outside the .bin is caught by AddressSanitizer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "base/errors.h"
#include "engine/data/idx_format.h"
#include "engine/data/indexed_dataset.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_indexed_dataset: accepted an index that breaks an invariant: %s\n", what);
  std::abort();
}

/// Largest synthetic .bin the harness allocates (an accepted .idx may claim up to 2^31 tokens per sequence).
constexpr uint64_t kMaxBinBytes = uint64_t{1} << 20;

/// What parse_idx promises about an index it accepts, for an image of `size` bytes.
void check_accepted(const orthotron::IdxIndex& index, size_t size) {
  const uint64_t n = index.sizes.size();
  const uint64_t d = index.document_indices.size();
  if (index.pointers.size() != n) broken("one pointer per size");
  if (size != orthotron::kIdxHeaderBytes + 12 * n + 8 * d) broken("image size differs from 34 + 12N + 8D");
  if (d < 1) broken("no document index");
  const uint64_t elem = orthotron::token_dtype_size(index.dtype);  // throws (a finding) for an unknown code
  uint64_t bytes = 0;
  for (uint64_t i = 0; i < n; ++i) {
    if (index.sizes[i] < 0) broken("negative size");
    if (static_cast<uint64_t>(index.pointers[i]) != bytes) broken("pointer is not the running byte offset");
    bytes += static_cast<uint64_t>(index.sizes[i]) * elem;  // N <= 2^60 sequences of < 2^31 x 8 bytes: no overflow
  }
  if (bytes != static_cast<uint64_t>(index.total_tokens) * elem) broken("total_tokens differs from sum(sizes)");
  if (index.document_indices.front() != 0) broken("document indices do not start at 0");
  if (static_cast<uint64_t>(index.document_indices.back()) != n) broken("document indices do not end at N");
  for (uint64_t k = 1; k < d; ++k) {
    if (index.document_indices[k] < index.document_indices[k - 1]) broken("document indices decrease");
  }
}

/// Reads every sequence, every document and a few refused ranges of an accepted index over a
/// synthetic .bin of exactly the size it claims.
void read_everything(const orthotron::IdxIndex& index) {
  if (!orthotron::is_integer_token_dtype(index.dtype)) return;
  const uint64_t bin_bytes = static_cast<uint64_t>(index.total_tokens) * orthotron::token_dtype_size(index.dtype);
  if (bin_bytes > kMaxBinBytes) return;
  std::vector<uint8_t> bin(static_cast<size_t>(bin_bytes));
  for (size_t b = 0; b < bin.size(); ++b) bin[b] = static_cast<uint8_t>(b * 131 + 7);
  const orthotron::IndexedDataset ds(index, bin.data(), bin.size(), "fuzz");
  std::vector<int64_t> tokens;
  for (size_t i = 0; i < ds.num_sequences(); ++i) {
    tokens.clear();
    ds.read(i, 0, ds.sequence_length(i), tokens);
    if (static_cast<int64_t>(tokens.size()) != ds.sequence_length(i)) broken("read returned a wrong count");
  }
  int64_t previous = 0;
  for (size_t k = 0; k <= ds.num_documents(); ++k) {
    const int64_t begin = ds.document_token_begin(k);
    if (begin < previous || begin > ds.total_tokens()) broken("document starts out of order");
    previous = begin;
  }
  if (previous != ds.total_tokens()) broken("the last document does not end at total_tokens");
  // Out-of-range requests are refusals, not reads.
  try {
    ds.read(ds.num_sequences(), 0, 0, tokens);
    broken("read past the last sequence accepted");
  } catch (const orthotron::InvalidArgument&) {
  }
  try {
    int64_t one = 0;
    ds.read_tokens(ds.total_tokens(), 1, &one);
    broken("read past the last token accepted");
  } catch (const orthotron::InvalidArgument&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const orthotron::IdxIndex index = orthotron::parse_idx(data, size, "fuzz.idx");
    check_accepted(index, size);
    read_everything(index);
  } catch (const orthotron::FormatError&) {
    // The expected refusal of a malformed index.
  }
  return 0;
}

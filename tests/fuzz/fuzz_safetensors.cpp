// fuzz_safetensors.cpp: libFuzzer harness of the safetensors header reader
// (base/safetensors_index.cpp + base/strict_json.cpp), the code the loader runs on every file it
// opens. The input is a whole file held in memory. FormatError is the expected way to refuse it;
// any other exception, a sanitizer report, a hang or a blown memory limit is a finding. A file that
// is accepted must also satisfy every property the loader relies on afterwards (checked below,
// abort() when one does not hold), so a wrong accept is a finding too.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/errors.h"
#include "base/safetensors_index.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: accepted a file that breaks an invariant: %s\n", what);
  std::abort();
}

/// What parse_safetensors_bytes promises about a file it accepts.
void check_accepted(const orthotron::SafetensorsIndex& index, uint64_t file_size) {
  if (index.header_len < 2 || index.header_len > orthotron::kMaxSafetensorsHeaderBytes) broken("header length");
  if (index.data_start != 8 + index.header_len || index.data_start > file_size) broken("data start");
  const uint64_t data_size = file_size - index.data_start;
  uint64_t cursor = 0;
  for (const auto& e : index.entries) {
    if (e.name == "__metadata__") broken("__metadata__ read as a tensor");
    if (e.shape.size() > orthotron::kMaxSafetensorsRank) broken("rank above the limit");
    // Element count in 128 bits, saturated: it must equal the byte span / dtype size exactly.
    unsigned __int128 elements = 1;
    for (const int64_t d : e.shape) {
      if (d < 0) broken("negative dimension");
      elements *= static_cast<uint64_t>(d);
      if (elements > (static_cast<unsigned __int128>(1) << 64)) elements = static_cast<unsigned __int128>(1) << 64;
    }
    const size_t elem = orthotron::safetensors_dtype_size(e.dtype);  // throws (a finding) for an unknown dtype
    if (e.begin > e.end || e.end > data_size) broken("byte range outside the data section");
    if (elements * elem != e.end - e.begin) broken("byte span differs from dtype size x element count");
    if (e.begin != cursor) broken("entries do not tile the data section");
    cursor = e.end;
  }
  if (cursor != data_size) broken("trailing or missing data bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const orthotron::SafetensorsIndex index = orthotron::parse_safetensors_bytes(bytes, "fuzz.safetensors");
    check_accepted(index, size);
  } catch (const orthotron::FormatError&) {
    // The expected refusal of a malformed file.
  }
  return 0;
}

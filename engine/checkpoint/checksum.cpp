// checksum.cpp: CRC-32 through zlib, and over whole files.
#include "engine/checkpoint/checksum.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/errors.h"

namespace orthotron {

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) {
  // zlib's CRC-32 (slice-by-N tables, several GB/s) in chunks its uInt length can hold.
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (size > 0) {
    const auto n = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    c = ::crc32(c, p, n);
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

FileChecksum file_crc32(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw FormatError("cannot open '" + path + "': " + std::strerror(errno));
  FileChecksum out;
  std::vector<unsigned char> buf(1 << 20);
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f);
    out.crc32 = crc32_update(out.crc32, buf.data(), n);
    out.bytes += n;
    if (n < buf.size()) break;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw FormatError("cannot read '" + path + "'");
  return out;
}

std::string crc32_hex(uint32_t crc) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", crc);
  return buf;
}

}  // namespace orthotron

// checksum.h: the CRC-32 (IEEE 802.3, the zlib/PNG polynomial) that checkpoint manifests record for
// every shard file and every tensor, computed by zlib. Local, no I/O beyond reading a file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace orthotron {

/// CRC-32 of `size` bytes, continuing from `crc` (0 to start): crc32("123456789") = 0xCBF43926.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

/// CRC-32 and byte count of a whole file, read in blocks. FormatError naming the path when it
/// cannot be opened or read.
struct FileChecksum {
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};
FileChecksum file_crc32(const std::string& path);

/// "0x" and 8 lower-case hex digits.
std::string crc32_hex(uint32_t crc);

}  // namespace orthotron

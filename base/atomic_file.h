// atomic_file.h: writing a file so that its real name only ever holds complete contents. Bytes go
// to a unique temporary name beside the target, are fsynced, renamed over the target, and the
// directory is fsynced. A crash or an error mid-write leaves the old file (or none) under the
// real name, never a half-written one. Depends on POSIX and base/errors.h only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace orthotron {

/// One atomic write. Construct (creates "<path>.tmp.<pid>.<n>" beside `path`), write() any number
/// of times, then commit(). Destroying it uncommitted removes the temporary file. Every failure is
/// a FormatError naming the path and the system error. Not thread-safe; local file I/O, blocking.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  /// fsync, rename over the target, fsync the directory. After it the writer is spent.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }
  uint64_t bytes_written() const { return written_; }

 private:
  void discard() noexcept;
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

/// Writes `contents` to `path` through an AtomicFileWriter.
void write_file_atomically(const std::string& path, const std::string& contents);

/// The directory part of `path` ("." when it has none).
std::string parent_directory(const std::string& path);

/// mkdir -p (mode 0755), through POSIX calls: LibTorch's shared library exports its own
/// ABI-incompatible copies of some std::filesystem symbols, so orthotron does not use them.
/// FormatError naming the directory that cannot be created, or `path` when it is not a directory.
void make_directories(const std::string& path);

/// fsyncs a directory so a rename inside it survives a power loss; FormatError on failure.
void fsync_directory(const std::string& dir);

}  // namespace orthotron

// document_reader.h: the documents of orthotron_preprocess's inputs, in order: a .jsonl file holds
// one document per line (a JSON object whose "text" key is a string), any other file is one
// document. Used by engine/tools/preprocess_data.cpp only; depends on nlohmann_json and base/errors.h.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace orthotron {

/// One document and where it came from ("file:line" for jsonl, the file name otherwise).
struct Document {
  std::string text;
  std::string origin;
};

/// Reads the documents of one input file, sequentially. Blocking local file I/O; not thread-safe.
class DocumentReader {
 public:
  /// Opens `path`; `.jsonl` selects the jsonl format, reading `key` of each record. InvalidArgument
  /// naming the path when it cannot be opened.
  DocumentReader(const std::string& path, std::string key = "text");
  /// The next document into `doc`; false at the end. FormatError "file:line: ..." for a jsonl line
  /// that is empty, not JSON (or not UTF-8), not an object, lacks `key` or whose `key` is not a string.
  bool next(Document& doc);
  /// Bytes of the file consumed so far (for progress).
  int64_t bytes_read() const { return bytes_read_; }

 private:
  std::string path_;
  std::string key_;
  bool jsonl_ = false;
  bool done_ = false;
  std::ifstream in_;
  int64_t line_ = 0;
  int64_t bytes_read_ = 0;
};

/// Size of `path` in bytes; InvalidArgument naming it when it is not a readable regular file.
int64_t input_file_size(const std::string& path);

}  // namespace orthotron

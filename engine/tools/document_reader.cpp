// document_reader.cpp: jsonl records and whole text files as documents.
#include "document_reader.h"

#include <sys/stat.h>

#include <iterator>
#include <nlohmann/json.hpp>

#include "base/errors.h"

namespace orthotron {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int64_t input_file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw InvalidArgument("input file '" + path + "' does not exist or is not a regular file");
  }
  return static_cast<int64_t>(st.st_size);
}

DocumentReader::DocumentReader(const std::string& path, std::string key)
    : path_(path), key_(std::move(key)), jsonl_(ends_with(path, ".jsonl")), in_(path, std::ios::binary) {
  if (!in_) throw InvalidArgument("input file '" + path + "' cannot be opened for reading");
}

bool DocumentReader::next(Document& doc) {
  if (done_) return false;
  if (!jsonl_) {
    doc.text.assign(std::istreambuf_iterator<char>(in_), std::istreambuf_iterator<char>());
    if (in_.bad()) throw FormatError("input file '" + path_ + "': read error");
    doc.origin = path_;
    bytes_read_ = static_cast<int64_t>(doc.text.size());
    done_ = true;
    return true;
  }
  std::string line;
  if (!std::getline(in_, line)) {
    if (in_.bad()) throw FormatError("input file '" + path_ + "': read error after line " + std::to_string(line_));
    done_ = true;
    return false;
  }
  ++line_;
  bytes_read_ += static_cast<int64_t>(line.size()) + (in_.eof() ? 0 : 1);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const std::string where = path_ + ":" + std::to_string(line_);
  if (line.find_first_not_of(" \t") == std::string::npos) {
    throw FormatError(where + ": empty line; expected one JSON object per line with a string \"" + key_ + "\"");
  }
  nlohmann::json record;
  try {
    record = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(where + ": not valid JSON (" + e.what() + ")");
  }
  if (!record.is_object()) {
    throw FormatError(where + ": expected a JSON object with a string \"" + key_ + "\", got a " + record.type_name());
  }
  const auto it = record.find(key_);
  if (it == record.end()) throw FormatError(where + ": the record has no \"" + key_ + "\" key");
  if (!it->is_string()) {
    throw FormatError(where + ": \"" + key_ + "\" must be a string, got a " + std::string(it->type_name()));
  }
  doc.text = it->get<std::string>();
  doc.origin = where;
  return true;
}

}  // namespace orthotron

// indexed_dataset.cpp: opening and mapping the two files, bounds-checked reads, and the builder.
#include "engine/data/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/atomic_file.h"
#include "base/errors.h"

namespace orthotron {

namespace {

[[noreturn]] void system_fail(const std::string& path, const std::string& what, int err) {
  throw FormatError("indexed dataset file '" + path + "': " + what + ": " + std::strerror(err));
}

/// A read-only private mapping of a whole file; empty files are not mapped (data() is null).
class FileMapping {
 public:
  explicit FileMapping(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) system_fail(path, "cannot open", errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      system_fail(path, "cannot stat", err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw FormatError("indexed dataset file '" + path + "': not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        system_fail(path, "cannot mmap " + std::to_string(size_) + " bytes", err);
      }
      data_ = p;
    }
    ::close(fd);
  }
  ~FileMapping() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(data_); }
  size_t size() const { return size_; }
  /// Hands the mapping to the caller, who must munmap(data, size).
  void* release() { return std::exchange(data_, nullptr); }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

void check_index(size_t i, size_t limit, const char* what, const std::string& source) {
  if (i > limit) {
    throw InvalidArgument("indexed dataset '" + source + "': " + what + " " + std::to_string(i) + " out of range [0, " +
                          std::to_string(limit) + "]");
  }
}

constexpr size_t kBuilderFlushBytes = size_t{1} << 20;

}  // namespace

IndexedDataset::IndexedDataset(const std::string& prefix) : source_(prefix) {
  {
    const FileMapping idx(prefix + ".idx");
    static const uint8_t kNothing = 0;
    index_ = parse_idx(idx.data() != nullptr ? idx.data() : &kNothing, idx.size(), prefix + ".idx");
  }
  if (!is_integer_token_dtype(index_.dtype)) {
    throw FormatError("indexed dataset index '" + prefix + ".idx': field 'dtype': expected an integer token dtype " +
                      "(codes 1-5, 8), got " + token_dtype_name(index_.dtype) + " (code " +
                      std::to_string(static_cast<int>(index_.dtype)) + ")");
  }
  FileMapping bin(prefix + ".bin");
  bin_ = bin.data();
  bin_size_ = bin.size();
  validate_bin();
  mapping_size_ = bin.size();
  mapping_ = bin.release();
}

IndexedDataset::IndexedDataset(IdxIndex index, const uint8_t* bin, size_t bin_size, std::string source)
    : source_(std::move(source)), bin_(bin), bin_size_(bin_size) {
  if (index.pointers.size() != index.sizes.size()) {
    throw FormatError("indexed dataset index '" + source_ + "': field 'pointers': expected " +
                      std::to_string(index.sizes.size()) + " (one per size), got " +
                      std::to_string(index.pointers.size()));
  }
  // The same checks as a file: through the encoder and the parser.
  const std::vector<uint8_t> image = encode_idx(index);
  index_ = parse_idx(image.data(), image.size(), source_);
  if (!is_integer_token_dtype(index_.dtype)) {
    throw FormatError("indexed dataset index '" + source_ + "': field 'dtype': expected an integer token dtype, got " +
                      token_dtype_name(index_.dtype));
  }
  if (bin_ == nullptr && bin_size_ != 0) throw InvalidArgument("indexed dataset '" + source_ + "': null .bin bytes");
  validate_bin();
}

void IndexedDataset::validate_bin() const {
  const uint64_t expected = static_cast<uint64_t>(index_.total_tokens) * token_dtype_size(index_.dtype);
  if (bin_size_ != expected) {
    throw FormatError("indexed dataset file '" + source_ + ".bin': expected " + std::to_string(expected) + " bytes (" +
                      std::to_string(index_.total_tokens) + " tokens x " +
                      std::to_string(token_dtype_size(index_.dtype)) + " bytes of " + token_dtype_name(index_.dtype) +
                      " from the .idx sizes), got " + std::to_string(bin_size_));
  }
}

IndexedDataset::~IndexedDataset() {
  release();
}

void IndexedDataset::release() noexcept {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
  mapping_size_ = 0;
}

IndexedDataset::IndexedDataset(IndexedDataset&& other) noexcept
    : index_(std::move(other.index_)),
      source_(std::move(other.source_)),
      bin_(std::exchange(other.bin_, nullptr)),
      bin_size_(std::exchange(other.bin_size_, 0)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_size_(std::exchange(other.mapping_size_, 0)) {}

IndexedDataset& IndexedDataset::operator=(IndexedDataset&& other) noexcept {
  if (this != &other) {
    release();
    index_ = std::move(other.index_);
    source_ = std::move(other.source_);
    bin_ = std::exchange(other.bin_, nullptr);
    bin_size_ = std::exchange(other.bin_size_, 0);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
  }
  return *this;
}

int64_t IndexedDataset::sequence_length(size_t i) const {
  if (i >= num_sequences()) {
    throw InvalidArgument("indexed dataset '" + source_ + "': sequence " + std::to_string(i) + " out of range [0, " +
                          std::to_string(num_sequences()) + ")");
  }
  return index_.sizes[i];
}

void IndexedDataset::read(size_t i, int64_t offset, int64_t length, std::vector<int64_t>& out) const {
  const int64_t size = sequence_length(i);
  if (offset < 0 || length < 0 || offset > size || length > size - offset) {
    throw InvalidArgument("indexed dataset '" + source_ + "': read of sequence " + std::to_string(i) + " at offset " +
                          std::to_string(offset) + " length " + std::to_string(length) + " is outside its " +
                          std::to_string(size) + " tokens");
  }
  const size_t before = out.size();
  out.resize(before + static_cast<size_t>(length));
  read_tokens(sequence_token_begin(i) + offset, length, out.data() + before);
}

int64_t IndexedDataset::sequence_token_begin(size_t i) const {
  check_index(i, num_sequences(), "sequence", source_);
  if (i == num_sequences()) return index_.total_tokens;
  return index_.pointers[i] / static_cast<int64_t>(token_dtype_size(index_.dtype));
}

int64_t IndexedDataset::document_token_begin(size_t k) const {
  check_index(k, num_documents(), "document", source_);
  return sequence_token_begin(static_cast<size_t>(index_.document_indices[k]));
}

void IndexedDataset::read_tokens(int64_t first, int64_t count, int64_t* out) const {
  if (first < 0 || count < 0 || first > index_.total_tokens || count > index_.total_tokens - first) {
    throw InvalidArgument("indexed dataset '" + source_ + "': tokens [" + std::to_string(first) + ", +" +
                          std::to_string(count) + ") are outside [0, " + std::to_string(index_.total_tokens) + ")");
  }
  if (count == 0) return;
  const size_t elem = token_dtype_size(index_.dtype);
  decode_tokens(index_.dtype, bin_ + static_cast<size_t>(first) * elem, count, out);
}

IndexedDatasetBuilder::IndexedDatasetBuilder(std::string prefix, TokenDtype dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  if (!is_integer_token_dtype(dtype_)) {
    throw InvalidArgument("IndexedDatasetBuilder '" + prefix_ + "': dtype must be an integer token dtype, got " +
                          token_dtype_name(dtype_));
  }
  bin_ = std::make_unique<AtomicFileWriter>(prefix_ + ".bin");
}

IndexedDatasetBuilder::~IndexedDatasetBuilder() = default;

void IndexedDatasetBuilder::add_document(const std::vector<int32_t>& tokens) {
  add_document(tokens.data(), tokens.size());
}

void IndexedDatasetBuilder::add_document(const int32_t* tokens, size_t count) {
  if (finalized_) throw InvalidArgument("IndexedDatasetBuilder '" + prefix_ + "': add_document after finalize()");
  if (count > static_cast<size_t>(INT32_MAX)) {
    throw InvalidArgument("IndexedDatasetBuilder '" + prefix_ + "': a document of " + std::to_string(count) +
                          " tokens does not fit the .idx's int32 size");
  }
  for (size_t t = 0; t < count; ++t) {
    if (!token_fits(dtype_, tokens[t])) {
      throw InvalidArgument("IndexedDatasetBuilder '" + prefix_ + "': document " + std::to_string(sizes_.size()) +
                            " token " + std::to_string(t) + " = " + std::to_string(tokens[t]) + " does not fit " +
                            token_dtype_name(dtype_));
    }
  }
  for (size_t t = 0; t < count; ++t) encode_token(dtype_, tokens[t], buffer_);
  sizes_.push_back(static_cast<int32_t>(count));
  tokens_ += static_cast<int64_t>(count);
  if (buffer_.size() >= kBuilderFlushBytes) flush();
}

void IndexedDatasetBuilder::flush() {
  if (!buffer_.empty()) bin_->write(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void IndexedDatasetBuilder::finalize() {
  if (finalized_) throw InvalidArgument("IndexedDatasetBuilder '" + prefix_ + "': finalize() called twice");
  finalized_ = true;
  flush();
  IdxIndex index;
  index.dtype = dtype_;
  index.sizes = sizes_;
  index.pointers.reserve(sizes_.size());
  int64_t pointer = 0;
  for (const int32_t s : sizes_) {
    index.pointers.push_back(pointer);
    pointer += static_cast<int64_t>(s) * static_cast<int64_t>(token_dtype_size(dtype_));
  }
  index.document_indices.resize(sizes_.size() + 1);
  for (size_t k = 0; k < index.document_indices.size(); ++k) index.document_indices[k] = static_cast<int64_t>(k);
  const std::vector<uint8_t> image = encode_idx(index);
  AtomicFileWriter idx(prefix_ + ".idx");
  idx.write(image.data(), image.size());
  bin_->commit();
  idx.commit();
  bin_.reset();
}

}  // namespace orthotron

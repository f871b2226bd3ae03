// indexed_dataset.h: a Megatron indexed dataset (prefix.idx + prefix.bin) opened read-only and
// memory-mapped, and the builder that writes one the way Megatron's preprocessing does. The byte
// format and its validation live in engine/data/idx_format.h.
// Depends on base/ (errors, atomic files), POSIX mmap and the standard library; no torch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/data/idx_format.h"

namespace orthotron {

class AtomicFileWriter;

/// A Megatron indexed dataset opened read-only: the .idx is parsed into memory (12 bytes per
/// sequence, 8 per document), the .bin is memory-mapped (not read) and unmapped in the destructor.
/// Every structural fact is validated at open (see parse_idx), plus: the dtype is an integer one
/// and the .bin holds exactly total_tokens() * dtype size bytes. An empty .bin is accepted only when
/// the index holds 0 tokens. All accessors are const and safe to call from several threads.
class IndexedDataset {
 public:
  /// Opens prefix + ".idx" and prefix + ".bin". FormatError naming the file, the field and the
  /// expected vs actual value; FormatError with the system error when a file cannot be opened or mapped.
  explicit IndexedDataset(const std::string& prefix);
  /// A dataset over caller-owned bytes (tests, fuzzing): `bin` of `bin_size` bytes must outlive the
  /// dataset and is never written. Same validation as the file constructor; `source` names it in errors.
  IndexedDataset(IdxIndex index, const uint8_t* bin, size_t bin_size, std::string source);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;
  IndexedDataset(IndexedDataset&& other) noexcept;
  IndexedDataset& operator=(IndexedDataset&& other) noexcept;

  size_t num_sequences() const { return index_.sizes.size(); }
  size_t num_documents() const { return index_.document_indices.size() - 1; }
  TokenDtype dtype() const { return index_.dtype; }
  int64_t total_tokens() const { return index_.total_tokens; }
  /// Document k holds sequences [document_indices()[k], document_indices()[k+1]).
  const std::vector<int64_t>& document_indices() const { return index_.document_indices; }
  const IdxIndex& index() const { return index_; }
  /// The prefix the dataset was opened from (or the `source` of a memory view).
  const std::string& source() const { return source_; }

  /// Tokens in sequence i. InvalidArgument when i >= num_sequences().
  int64_t sequence_length(size_t i) const;
  /// Tokens [offset, offset+length) of sequence i, widened to int64, appended to `out`.
  /// InvalidArgument when i, offset or length is out of range (offset, length >= 0, end <= length of i).
  void read(size_t i, int64_t offset, int64_t length, std::vector<int64_t>& out) const;

  /// Position in the .bin's token stream (all sequences in file order) where sequence i starts;
  /// i = num_sequences() gives total_tokens(). InvalidArgument when i > num_sequences().
  int64_t sequence_token_begin(size_t i) const;
  /// Where document k starts in the token stream; k = num_documents() gives total_tokens(). A
  /// document's sequences are contiguous, so document k is [begin(k), begin(k+1)). InvalidArgument past that.
  int64_t document_token_begin(size_t k) const;
  /// Tokens [first, first+count) of the token stream, widened to int64, into out[0 .. count).
  /// InvalidArgument when the range is not inside [0, total_tokens()).
  void read_tokens(int64_t first, int64_t count, int64_t* out) const;

 private:
  void validate_bin() const;
  void release() noexcept;

  IdxIndex index_;
  std::string source_;
  const uint8_t* bin_ = nullptr;
  size_t bin_size_ = 0;
  void* mapping_ = nullptr;  ///< what munmap releases (null for a memory view or an empty .bin)
  size_t mapping_size_ = 0;
};

/// Writes prefix.bin and prefix.idx the way Megatron's preprocessing does (tools/preprocess_data.py
/// with one sequence per document): each add_document() is one sequence and one document, so
/// document_indices = 0, 1, ..., N. Tokens stream to a temporary file beside prefix.bin; finalize()
/// fsyncs and renames the .bin into place, then writes the .idx the same way, so the .idx appears
/// last and only over a complete .bin. Destroyed without finalize(), it leaves no file behind (the
/// temporaries are removed). Not thread-safe; blocking local file I/O.
class IndexedDatasetBuilder {
 public:
  /// InvalidArgument for a float or unknown dtype; FormatError when the temporary cannot be created.
  IndexedDatasetBuilder(std::string prefix, TokenDtype dtype);
  ~IndexedDatasetBuilder();
  IndexedDatasetBuilder(const IndexedDatasetBuilder&) = delete;
  IndexedDatasetBuilder& operator=(const IndexedDatasetBuilder&) = delete;

  /// Appends one document. InvalidArgument (and nothing written) if a token does not fit the dtype,
  /// if the document has 2^31 tokens or more, or after finalize(). FormatError on a write error.
  void add_document(const std::vector<int32_t>& tokens);
  void add_document(const int32_t* tokens, size_t count);
  int64_t documents() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t tokens() const { return tokens_; }
  TokenDtype dtype() const { return dtype_; }
  /// Writes the .idx, fsyncs, atomically renames both files into place (.bin first). Once only:
  /// InvalidArgument when called again. FormatError on an I/O error.
  void finalize();

 private:
  void flush();

  std::string prefix_;
  TokenDtype dtype_;
  std::unique_ptr<AtomicFileWriter> bin_;
  std::vector<uint8_t> buffer_;
  std::vector<int32_t> sizes_;
  int64_t tokens_ = 0;
  bool finalized_ = false;
};

}  // namespace orthotron

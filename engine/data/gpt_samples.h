// gpt_samples.h: GPT training samples cut from an indexed dataset across document boundaries
// (Megatron's document index / sample index / shuffle index, computed per epoch on demand), the
// portable seeded shuffle they use, and the data-parallel slicing of a global batch by consumed samples.
// Depends on engine/data/indexed_dataset.h and base/errors.h; no torch.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/data/indexed_dataset.h"

namespace orthotron {

/// A seed for one (epoch, purpose) of a run: three rounds of splitmix64 over seed, epoch, purpose.
/// The same on every platform and standard library.
uint64_t derive_seed(uint64_t seed, uint64_t epoch, uint64_t purpose);

/// A permutation of 0..n-1 that depends only on (n, seed): Fisher-Yates from the last position down,
/// position i swapped with j drawn uniformly from [0, i] by rejection sampling on a splitmix64 stream
/// started at `seed` (draw r, reject r < 2^64 mod (i+1), j = r mod (i+1)). No std::shuffle or
/// std::uniform_int_distribution (implementation-defined), so every platform gives the same order.
/// InvalidArgument when n < 0.
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

/// GPT training samples of seq_length + 1 tokens drawn across document boundaries, Megatron style:
/// for each epoch a seeded shuffle of the document order, the epoch's documents concatenated (each
/// document's sequences in file order) into one stream of total_tokens() tokens and cut into samples
/// of seq_length+1 tokens where consecutive samples overlap by one token (sample j starts at token
/// j*seq_length of the epoch's stream), and a seeded shuffle of the samples within the epoch. Global
/// sample index g belongs to epoch g / samples_per_epoch(); epochs continue forever, each with its own
/// shuffles (seeds derive_seed(seed, epoch, 1) for documents, derive_seed(seed, epoch, 2) for samples),
/// so any g >= 0 is valid. With shuffle = false neither is shuffled: every epoch is the file's token
/// stream and global sample g is stream[j*L, j*L + L] with j = g mod samples_per_epoch().
/// Deterministic in (dataset, seq_length, seed, shuffle). The tokens after the last whole sample of
/// an epoch are not used in that epoch (a different document order uses different ones).
///
/// Memory: the tables of the two most recently used epochs (document order and starts, 16 bytes per
/// document; sample order, 8 bytes per sample), built on first use (an O(documents + samples)
/// shuffle). Thread-safe: sample() may be called concurrently; the cache is behind a mutex and a
/// caller keeps the epoch tables it uses alive while it reads. `data` must outlive this object.
class GptSamples {
 public:
  /// InvalidArgument when seq_length < 1 or the dataset has fewer than seq_length + 1 tokens.
  GptSamples(const IndexedDataset& data, int64_t seq_length, uint64_t seed, bool shuffle = true);
  ~GptSamples();

  int64_t seq_length() const { return seq_length_; }
  uint64_t seed() const { return seed_; }
  bool shuffled() const { return shuffle_; }
  /// (total_tokens - 1) / seq_length.
  int64_t samples_per_epoch() const { return samples_per_epoch_; }

  /// Writes the seq_length + 1 tokens of global sample g to out[0 .. seq_length]: inputs are
  /// out[0 .. L-1], labels out[1 .. L]. InvalidArgument when g < 0. Blocking (may build an epoch's tables).
  void sample(int64_t g, int64_t* out) const;
  /// The same, as a new vector.
  std::vector<int64_t> sample(int64_t g) const;

  /// The document order of `epoch` (a permutation of 0..num_documents()-1; the identity without shuffle).
  /// InvalidArgument when epoch < 0.
  std::vector<int64_t> document_order(int64_t epoch) const;
  /// Where global sample g starts in its epoch's token stream: j * seq_length for the sample's position j.
  int64_t sample_stream_offset(int64_t g) const;

 private:
  struct EpochTables;
  std::shared_ptr<const EpochTables> tables(int64_t epoch) const;
  std::shared_ptr<const EpochTables> build(int64_t epoch) const;

  const IndexedDataset& data_;
  int64_t seq_length_;
  uint64_t seed_;
  bool shuffle_;
  int64_t samples_per_epoch_ = 0;
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const EpochTables> recent_[2];  ///< [0] most recently used
};

/// Data-parallel slicing driven by consumed samples (Megatron's pretraining sampler): one iteration
/// consumes global_batch = micro_batch * accumulation * dp_size samples starting at consumed_samples;
/// micro-step k (0 <= k < accumulation) of rank r takes the micro_batch consecutive global indices
/// starting at consumed_samples + (k * dp_size + r) * micro_batch. A resumed run passes the
/// consumed_samples its checkpoint recorded and continues exactly. InvalidArgument when
/// consumed_samples < 0, micro_batch, accumulation or dp_size < 1, dp_rank outside [0, dp_size),
/// micro_step outside [0, accumulation), or an index would overflow int64.
std::vector<int64_t> micro_batch_indices(int64_t consumed_samples, int64_t micro_batch, int64_t accumulation,
                                         int64_t dp_size, int64_t dp_rank, int64_t micro_step);

}  // namespace orthotron

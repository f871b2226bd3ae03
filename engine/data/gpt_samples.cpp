// gpt_samples.cpp: the portable shuffle, the per-epoch tables (document order, where each document
// starts in the epoch's stream, sample order), and the walk that copies a sample across documents.
#include "engine/data/gpt_samples.h"

#include <algorithm>
#include <string>
#include <utility>

#include "base/errors.h"

namespace orthotron {

namespace {

constexpr uint64_t kDocumentShuffle = 1;
constexpr uint64_t kSampleShuffle = 2;

/// splitmix64: advances `state` and returns the next output.
uint64_t splitmix64(uint64_t& state) {
  state += 0x9E3779B97F4A7C15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string who(const IndexedDataset& data) {
  return "GptSamples over '" + data.source() + "'";
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t epoch, uint64_t purpose) {
  uint64_t state = seed;
  state = splitmix64(state) ^ epoch;
  state = splitmix64(state) ^ purpose;
  return splitmix64(state);
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  if (n < 0) throw InvalidArgument("seeded_permutation: n must be >= 0, got " + std::to_string(n));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound: draws below it are biased
    uint64_t r = splitmix64(state);
    while (r < threshold) r = splitmix64(state);
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(r % bound)]);
  }
  return perm;
}

struct GptSamples::EpochTables {
  int64_t epoch = 0;
  std::vector<int64_t> document_order;  ///< document ids in stream order
  std::vector<int64_t> document_start;  ///< where the i-th document of the order starts; [D] = total
  std::vector<int64_t> sample_order;    ///< sample positions in training order (empty: identity)
};

GptSamples::GptSamples(const IndexedDataset& data, int64_t seq_length, uint64_t seed, bool shuffle)
    : data_(data), seq_length_(seq_length), seed_(seed), shuffle_(shuffle) {
  if (seq_length < 1) throw InvalidArgument(who(data) + ": seq_length must be >= 1, got " + std::to_string(seq_length));
  samples_per_epoch_ = data.total_tokens() > 0 ? (data.total_tokens() - 1) / seq_length : 0;
  if (samples_per_epoch_ == 0) {
    throw InvalidArgument(who(data) + ": " + std::to_string(data.total_tokens()) +
                          " tokens make no sample of seq_length + 1 = " + std::to_string(seq_length + 1) + " tokens");
  }
}

GptSamples::~GptSamples() = default;

std::shared_ptr<const GptSamples::EpochTables> GptSamples::build(int64_t epoch) const {
  auto t = std::make_shared<EpochTables>();
  t->epoch = epoch;
  const int64_t documents = static_cast<int64_t>(data_.num_documents());
  if (shuffle_) {
    t->document_order =
        seeded_permutation(documents, derive_seed(seed_, static_cast<uint64_t>(epoch), kDocumentShuffle));
    t->sample_order =
        seeded_permutation(samples_per_epoch_, derive_seed(seed_, static_cast<uint64_t>(epoch), kSampleShuffle));
  } else {
    t->document_order.resize(static_cast<size_t>(documents));
    for (int64_t d = 0; d < documents; ++d) t->document_order[static_cast<size_t>(d)] = d;
  }
  t->document_start.resize(static_cast<size_t>(documents) + 1);
  int64_t position = 0;
  for (size_t i = 0; i < t->document_order.size(); ++i) {
    t->document_start[i] = position;
    const auto d = static_cast<size_t>(t->document_order[i]);
    position += data_.document_token_begin(d + 1) - data_.document_token_begin(d);
  }
  t->document_start.back() = position;
  return t;
}

std::shared_ptr<const GptSamples::EpochTables> GptSamples::tables(int64_t epoch) const {
  if (epoch < 0) throw InvalidArgument(who(data_) + ": epoch must be >= 0, got " + std::to_string(epoch));
  if (!shuffle_) epoch = 0;  // every epoch is the same stream in the same order
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (recent_[0] && recent_[0]->epoch == epoch) return recent_[0];
    if (recent_[1] && recent_[1]->epoch == epoch) {
      std::swap(recent_[0], recent_[1]);
      return recent_[0];
    }
  }
  // Built outside the lock; two threads may both build the same epoch, with equal results.
  std::shared_ptr<const EpochTables> built = build(epoch);
  std::lock_guard<std::mutex> lock(mutex_);
  recent_[1] = std::move(recent_[0]);
  recent_[0] = built;
  return built;
}

std::vector<int64_t> GptSamples::document_order(int64_t epoch) const {
  return tables(epoch)->document_order;
}

int64_t GptSamples::sample_stream_offset(int64_t g) const {
  if (g < 0) throw InvalidArgument(who(data_) + ": sample index must be >= 0, got " + std::to_string(g));
  const int64_t position = g % samples_per_epoch_;
  if (!shuffle_) return position * seq_length_;
  const auto t = tables(g / samples_per_epoch_);
  return t->sample_order[static_cast<size_t>(position)] * seq_length_;
}

void GptSamples::sample(int64_t g, int64_t* out) const {
  if (g < 0) throw InvalidArgument(who(data_) + ": sample index must be >= 0, got " + std::to_string(g));
  const auto t = tables(g / samples_per_epoch_);
  const int64_t position = g % samples_per_epoch_;
  int64_t p = (t->sample_order.empty() ? position : t->sample_order[static_cast<size_t>(position)]) * seq_length_;
  int64_t remaining = seq_length_ + 1;
  // The last document of the order that starts at or before p (empty documents are skipped below).
  size_t i = static_cast<size_t>(std::upper_bound(t->document_start.begin(), t->document_start.end(), p) -
                                 t->document_start.begin()) -
             1;
  while (remaining > 0) {
    if (i >= t->document_order.size()) {
      throw InvariantError(who(data_) + ": sample " + std::to_string(g) + " runs past the end of epoch " +
                           std::to_string(t->epoch) + "'s stream");
    }
    const auto d = static_cast<size_t>(t->document_order[i]);
    const int64_t begin = data_.document_token_begin(d);
    const int64_t length = data_.document_token_begin(d + 1) - begin;
    const int64_t offset = p - t->document_start[i];
    const int64_t n = std::min(remaining, length - offset);
    if (n > 0) {
      data_.read_tokens(begin + offset, n, out);
      out += n;
      remaining -= n;
      p += n;
    }
    ++i;
  }
}

std::vector<int64_t> GptSamples::sample(int64_t g) const {
  std::vector<int64_t> out(static_cast<size_t>(seq_length_ + 1));
  sample(g, out.data());
  return out;
}

std::vector<int64_t> micro_batch_indices(int64_t consumed_samples, int64_t micro_batch, int64_t accumulation,
                                         int64_t dp_size, int64_t dp_rank, int64_t micro_step) {
  const std::string args = "micro_batch_indices(consumed_samples=" + std::to_string(consumed_samples) +
                           ", micro_batch=" + std::to_string(micro_batch) +
                           ", accumulation=" + std::to_string(accumulation) + ", dp_size=" + std::to_string(dp_size) +
                           ", dp_rank=" + std::to_string(dp_rank) + ", micro_step=" + std::to_string(micro_step) + ")";
  if (consumed_samples < 0) throw InvalidArgument(args + ": consumed_samples must be >= 0");
  if (micro_batch < 1 || accumulation < 1 || dp_size < 1) {
    throw InvalidArgument(args + ": micro_batch, accumulation and dp_size must be >= 1");
  }
  if (dp_rank < 0 || dp_rank >= dp_size) throw InvalidArgument(args + ": dp_rank must be in [0, dp_size)");
  if (micro_step < 0 || micro_step >= accumulation) {
    throw InvalidArgument(args + ": micro_step must be in [0, accumulation)");
  }
  int64_t global_batch = 0;
  int64_t first = 0;
  int64_t end = 0;
  if (__builtin_mul_overflow(micro_batch, accumulation, &global_batch) ||
      __builtin_mul_overflow(global_batch, dp_size, &global_batch) ||
      __builtin_add_overflow(consumed_samples, global_batch, &end) ||
      __builtin_add_overflow(consumed_samples, (micro_step * dp_size + dp_rank) * micro_batch, &first)) {
    throw InvalidArgument(args + ": the iteration's sample indices overflow int64");
  }
  std::vector<int64_t> indices(static_cast<size_t>(micro_batch));
  for (int64_t m = 0; m < micro_batch; ++m) indices[static_cast<size_t>(m)] = first + m;
  return indices;
}

}  // namespace orthotron

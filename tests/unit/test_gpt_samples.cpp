// test_gpt_samples.cpp: GPT samples cut across documents, checked against each epoch's token stream
// rebuilt here from the dataset's documents in the exposed order; the portable shuffle against an
// independent implementation; and the data-parallel slicing of global batches by consumed samples.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "base/errors.h"
#include "engine/data/gpt_samples.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;
using orthotron::testing::unique_temp_path;
using Tokens = std::vector<int64_t>;

constexpr int64_t kFirstToken = 1000;

/// Documents of these lengths (two empty), every token unique: kFirstToken + its position in the file.
IndexedDataset make_dataset(const std::string& tag,
                            const std::vector<int>& lengths = {5, 0, 17, 3, 1, 9, 0, 30, 2, 11, 7, 4}) {
  const std::string prefix = unique_temp_path(tag);
  IndexedDatasetBuilder b(prefix, TokenDtype::kInt32);
  int32_t next = kFirstToken;
  for (int len : lengths) {
    std::vector<int32_t> doc;
    for (int t = 0; t < len; ++t) doc.push_back(next++);
    b.add_document(doc);
  }
  b.finalize();
  return IndexedDataset(prefix);
}

/// The epoch's stream rebuilt from the dataset: each document (here one sequence) in `order`.
Tokens stream_of(const IndexedDataset& ds, const std::vector<int64_t>& order) {
  Tokens stream;
  for (int64_t d : order) {
    const auto s = static_cast<size_t>(d);
    ds.read(s, 0, ds.sequence_length(s), stream);
  }
  return stream;
}

bool is_permutation_of_iota(std::vector<int64_t> v, int64_t n) {
  if (static_cast<int64_t>(v.size()) != n) return false;
  std::sort(v.begin(), v.end());
  for (int64_t i = 0; i < n; ++i) {
    if (v[static_cast<size_t>(i)] != i) return false;
  }
  return true;
}

/// For each sample of `epoch`: it is a contiguous slice of the rebuilt stream starting at a multiple of
/// L (found from its first token, all tokens being unique). Returns the sample positions in training order.
std::vector<int64_t> check_epoch(const GptSamples& samples, const IndexedDataset& ds, int64_t epoch) {
  const int64_t L = samples.seq_length();
  const int64_t S = samples.samples_per_epoch();
  const Tokens stream = stream_of(ds, samples.document_order(epoch));
  EXPECT_EQ(static_cast<int64_t>(stream.size()), ds.total_tokens());
  std::vector<int64_t> positions;
  for (int64_t k = 0; k < S; ++k) {
    const int64_t g = epoch * S + k;
    const Tokens s = samples.sample(g);
    EXPECT_EQ(static_cast<int64_t>(s.size()), L + 1);
    const auto at = std::find(stream.begin(), stream.end(), s[0]);
    EXPECT_NE(at, stream.end()) << "sample " << g;
    if (at == stream.end()) return positions;
    const int64_t p = at - stream.begin();
    EXPECT_EQ(p % L, 0) << "sample " << g << " starts at stream token " << p;
    EXPECT_LE(p + L + 1, static_cast<int64_t>(stream.size()));
    if (p + L + 1 > static_cast<int64_t>(stream.size())) return positions;
    EXPECT_EQ(s, Tokens(stream.begin() + p, stream.begin() + p + L + 1)) << "sample " << g;
    EXPECT_EQ(samples.sample_stream_offset(g), p);
    positions.push_back(p / L);
  }
  return positions;
}

TEST(GptSamples, UnshuffledSamplesAreConsecutiveSlicesOverlappingByOneToken) {
  const IndexedDataset ds = make_dataset("plain");
  const GptSamples samples(ds, 8, 1234, /*shuffle=*/false);
  ASSERT_EQ(ds.total_tokens(), 89);
  EXPECT_EQ(samples.samples_per_epoch(), 11);  // (89 - 1) / 8
  Tokens stream(static_cast<size_t>(ds.total_tokens()));
  ds.read_tokens(0, ds.total_tokens(), stream.data());
  for (int64_t g = 0; g < 3 * samples.samples_per_epoch(); ++g) {
    const int64_t j = g % samples.samples_per_epoch();
    EXPECT_EQ(samples.sample(g), Tokens(stream.begin() + j * 8, stream.begin() + j * 8 + 9)) << "sample " << g;
  }
  // A sample ending exactly at the last token: 89 = 11 * 8 + 1.
  EXPECT_EQ(samples.sample(10).back(), stream.back());
}

TEST(GptSamples, ShuffledEpochsArePermutationsOfTheirStreamsSlices) {
  const IndexedDataset ds = make_dataset("shuffled");
  for (int64_t L : {1, 4, 7, 88}) {
    SCOPED_TRACE("seq_length " + std::to_string(L));
    const GptSamples samples(ds, L, 99);
    std::vector<std::vector<int64_t>> orders;
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      const std::vector<int64_t> docs = samples.document_order(epoch);
      EXPECT_TRUE(is_permutation_of_iota(docs, static_cast<int64_t>(ds.num_documents())));
      const std::vector<int64_t> positions = check_epoch(samples, ds, epoch);
      EXPECT_TRUE(is_permutation_of_iota(positions, samples.samples_per_epoch())) << "epoch " << epoch;
      orders.push_back(docs);
    }
    EXPECT_NE(orders[0], orders[1]);
    EXPECT_NE(orders[1], orders[2]);
  }
}

TEST(GptSamples, DeterministicInTheSeedAndIndependentOfAccessOrder) {
  const IndexedDataset ds = make_dataset("determinism");
  const GptSamples a(ds, 6, 7);
  const GptSamples b(ds, 6, 7);
  const GptSamples c(ds, 6, 8);
  const int64_t n = 4 * a.samples_per_epoch();
  std::vector<Tokens> from_a;
  for (int64_t g = 0; g < n; ++g) from_a.push_back(a.sample(g));
  // b visits the same indices backwards (epoch tables built in another order): same samples.
  for (int64_t g = n - 1; g >= 0; --g) EXPECT_EQ(b.sample(g), from_a[static_cast<size_t>(g)]) << g;
  std::vector<Tokens> from_c;
  for (int64_t g = 0; g < n; ++g) from_c.push_back(c.sample(g));
  EXPECT_NE(from_a, from_c) << "another seed must change the order";
  // Same multiset of sample positions per epoch: only the order differs.
  std::vector<int64_t> pa, pc;
  for (int64_t g = 0; g < a.samples_per_epoch(); ++g) {
    pa.push_back(a.sample_stream_offset(g));
    pc.push_back(c.sample_stream_offset(g));
  }
  EXPECT_NE(pa, pc);
  std::sort(pa.begin(), pa.end());
  std::sort(pc.begin(), pc.end());
  EXPECT_EQ(pa, pc);
  // Epoch 1's sample order differs from epoch 0's.
  std::vector<int64_t> p1;
  for (int64_t g = a.samples_per_epoch(); g < 2 * a.samples_per_epoch(); ++g) p1.push_back(a.sample_stream_offset(g));
  std::vector<int64_t> p0;
  for (int64_t g = 0; g < a.samples_per_epoch(); ++g) p0.push_back(a.sample_stream_offset(g));
  EXPECT_NE(p0, p1);
}

TEST(GptSamples, ConcurrentReadersSeeTheSameSamples) {
  const IndexedDataset ds = make_dataset("threads");
  const GptSamples samples(ds, 5, 3);
  const int64_t n = 6 * samples.samples_per_epoch();
  std::vector<Tokens> expected;
  {
    const GptSamples reference(ds, 5, 3);
    for (int64_t g = 0; g < n; ++g) expected.push_back(reference.sample(g));
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Each thread strides through all epochs from another start, so epoch tables are evicted and rebuilt.
      for (int64_t i = 0; i < n; ++i) {
        const int64_t g = (i * 7 + t * 13) % n;
        if (samples.sample(g) != expected[static_cast<size_t>(g)]) ++mismatches[static_cast<size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[static_cast<size_t>(t)], 0) << "thread " << t;
}

TEST(GptSamples, RefusesWhatCannotMakeASample) {
  const IndexedDataset ds = make_dataset("small", {3, 0, 2});
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { GptSamples s(ds, 0, 1); }), "seq_length must be >= 1"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { GptSamples s(ds, 5, 1); }), "5 tokens make no sample"));
  const GptSamples ok(ds, 4, 1);
  EXPECT_EQ(ok.samples_per_epoch(), 1);
  EXPECT_EQ(ok.sample(5), ok.sample(0)) << "one sample per epoch, whatever the epoch";
  EXPECT_THROW(ok.sample(-1), InvalidArgument);
  EXPECT_THROW(ok.document_order(-1), InvalidArgument);
  const IndexedDataset empty = make_dataset("empty", {});
  EXPECT_THROW(GptSamples(empty, 1, 1), InvalidArgument);
}

// ---- the portable shuffle, against an independent implementation of its documented algorithm ----

uint64_t reference_splitmix(uint64_t& s) {
  s += 0x9E3779B97F4A7C15ull;
  uint64_t z = s;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<int64_t> reference_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  uint64_t s = seed;
  for (int64_t i = n - 1; i >= 1; --i) {
    const uint64_t m = static_cast<uint64_t>(i + 1);
    uint64_t r;
    do {
      r = reference_splitmix(s);
    } while (r < (~m + 1) % m);
    std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(r % m)]);
  }
  return v;
}

TEST(SeededPermutation, MatchesItsDocumentedAlgorithmAndIsAPermutation) {
  for (int64_t n : {0, 1, 2, 3, 10, 1000}) {
    for (uint64_t seed : {uint64_t{0}, uint64_t{1}, uint64_t{0xdeadbeef}, ~uint64_t{0}}) {
      const std::vector<int64_t> p = seeded_permutation(n, seed);
      EXPECT_EQ(p, reference_permutation(n, seed)) << "n " << n << " seed " << seed;
      EXPECT_TRUE(is_permutation_of_iota(p, n));
    }
  }
  EXPECT_NE(seeded_permutation(100, 1), seeded_permutation(100, 2));
  EXPECT_THROW(seeded_permutation(-1, 0), InvalidArgument);
  EXPECT_NE(derive_seed(5, 0, 1), derive_seed(5, 1, 1));
  EXPECT_NE(derive_seed(5, 0, 1), derive_seed(5, 0, 2));
  EXPECT_NE(derive_seed(5, 0, 1), derive_seed(6, 0, 1));
  EXPECT_EQ(derive_seed(5, 3, 1), derive_seed(5, 3, 1));
}

// ---- data-parallel slicing by consumed samples ----

/// Every index one iteration hands out, over all ranks and micro-steps, each checked to be new.
std::vector<int64_t> iteration_indices(int64_t consumed, int64_t mb, int64_t acc, int64_t dp) {
  std::vector<int64_t> all;
  for (int64_t r = 0; r < dp; ++r) {
    for (int64_t k = 0; k < acc; ++k) {
      const std::vector<int64_t> idx = micro_batch_indices(consumed, mb, acc, dp, r, k);
      EXPECT_EQ(static_cast<int64_t>(idx.size()), mb);
      all.insert(all.end(), idx.begin(), idx.end());
    }
  }
  std::sort(all.begin(), all.end());
  EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end()) << "an index handed out twice";
  return all;
}

std::vector<int64_t> range(int64_t begin, int64_t count) {
  std::vector<int64_t> v(static_cast<size_t>(count));
  std::iota(v.begin(), v.end(), begin);
  return v;
}

TEST(MicroBatchIndices, AnIterationCoversItsGlobalBatchExactlyOnce) {
  for (int64_t mb : {1, 2, 3}) {
    for (int64_t acc : {1, 2, 4}) {
      for (int64_t dp : {1, 2, 3}) {
        const int64_t global = mb * acc * dp;
        for (int64_t it = 0; it < 3; ++it) {
          const int64_t consumed = 17 + it * global;  // consecutive iterations
          EXPECT_EQ(iteration_indices(consumed, mb, acc, dp), range(consumed, global))
              << "mb " << mb << " acc " << acc << " dp " << dp << " iteration " << it;
        }
      }
    }
  }
}

TEST(MicroBatchIndices, SameGlobalBatchSameIndexSet) {
  for (int64_t consumed : {0, 8, 40}) {
    EXPECT_EQ(iteration_indices(consumed, 2, 1, 2), iteration_indices(consumed, 2, 2, 1));  // dp 2 vs acc 2
    EXPECT_EQ(iteration_indices(consumed, 2, 2, 1), iteration_indices(consumed, 4, 1, 1));  // micro 2 x acc 2 vs 4
    EXPECT_EQ(iteration_indices(consumed, 1, 4, 2), iteration_indices(consumed, 4, 1, 2));
  }
}

TEST(MicroBatchIndices, RankTakesItsSliceOfEachMicroBatchBlock) {
  // ecosystem.md: rank r takes [r*mbs, (r+1)*mbs) of each mbs*dp block, blocks in micro-step order.
  const int64_t consumed = 10, mb = 2, acc = 2, dp = 3;
  for (int64_t k = 0; k < acc; ++k) {
    for (int64_t r = 0; r < dp; ++r) {
      const int64_t block = consumed + k * mb * dp;
      EXPECT_EQ(micro_batch_indices(consumed, mb, acc, dp, r, k), range(block + r * mb, mb)) << k << " " << r;
    }
  }
}

TEST(MicroBatchIndices, ResumeFromConsumedSamplesContinuesExactly) {
  const IndexedDataset ds = make_dataset("resume");
  const int64_t mb = 2, acc = 2, dp = 2, global = mb * acc * dp;
  // Uninterrupted: 6 iterations; each rank's samples by (iteration, micro-step).
  std::vector<Tokens> straight;
  {
    const GptSamples samples(ds, 6, 42);
    for (int64_t it = 0; it < 6; ++it) {
      for (int64_t r = 0; r < dp; ++r) {
        for (int64_t k = 0; k < acc; ++k) {
          for (int64_t g : micro_batch_indices(it * global, mb, acc, dp, r, k)) straight.push_back(samples.sample(g));
        }
      }
    }
  }
  // Stopped after iteration 2 (consumed_samples = 3 * global recorded), resumed with a fresh sampler.
  const GptSamples resumed(ds, 6, 42);
  size_t at = static_cast<size_t>(3 * global);
  for (int64_t it = 3; it < 6; ++it) {
    for (int64_t r = 0; r < dp; ++r) {
      for (int64_t k = 0; k < acc; ++k) {
        for (int64_t g : micro_batch_indices(it * global, mb, acc, dp, r, k)) {
          EXPECT_EQ(resumed.sample(g), straight[at++]) << "iteration " << it;
        }
      }
    }
  }
}

TEST(MicroBatchIndices, RefusesInvalidArguments) {
  EXPECT_TRUE(
      contains(thrown_message<InvalidArgument>([] { micro_batch_indices(-1, 1, 1, 1, 0, 0); }), "consumed_samples=-1"));
  EXPECT_THROW(micro_batch_indices(0, 0, 1, 1, 0, 0), InvalidArgument);
  EXPECT_THROW(micro_batch_indices(0, 1, 0, 1, 0, 0), InvalidArgument);
  EXPECT_THROW(micro_batch_indices(0, 1, 1, 0, 0, 0), InvalidArgument);
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([] { micro_batch_indices(0, 1, 1, 2, 2, 0); }), "dp_rank"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([] { micro_batch_indices(0, 1, 2, 1, 0, 2); }), "micro_step"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>(
                           [] { micro_batch_indices(std::numeric_limits<int64_t>::max() - 2, 4, 1, 1, 0, 0); }),
                       "overflow"));
}

}  // namespace
}  // namespace orthotron

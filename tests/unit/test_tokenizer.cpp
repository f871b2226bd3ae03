// test_tokenizer.cpp: the byte tokenizer, SentencePiece BPE training and loading (engine/data/tokenizer.h).
#include "engine/data/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "test_util.h"

namespace orthotron {
namespace {

using testing::contains;
using testing::thrown_message;
using testing::unique_temp_path;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A few thousand lines of English-like sentences from a fixed vocabulary, drawn with a seeded
/// generator: the same text on every run and machine (std::mt19937 is fully specified).
std::string generated_text(size_t lines) {
  static const char* const kWords[] = {"the",      "model",    "learns", "a",          "token",    "from",
                                       "every",    "document", "and",    "writes",     "its",      "state",
                                       "to",       "disk",     "when",   "training",   "ends",     "each",
                                       "rank",     "owns",     "one",    "matrix",     "of",       "weights",
                                       "gradient", "is",       "sent",   "back",       "after",    "orthogonalization",
                                       "with",     "newton",   "schulz", "iterations", "in",       "float",
                                       "data",     "pipeline", "reads",  "samples",    "shuffled", "by",
                                       "epoch",    "seed",     "number", "42",         "1024",     "vocabulary",
                                       "merges",   "pieces",   "bytes",  "unicode",    "café",     "naïve"};
  constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  std::mt19937 gen(12345);
  std::string text;
  for (size_t l = 0; l < lines; ++l) {
    const size_t n = 4 + gen() % 12;
    for (size_t w = 0; w < n; ++w) {
      std::string word = kWords[gen() % kNumWords];
      if (w == 0) word[0] = static_cast<char>(word[0] >= 'a' && word[0] <= 'z' ? word[0] - 32 : word[0]);
      text += (w ? " " : "") + word;
    }
    text += (gen() % 4 == 0) ? "?\n" : ".\n";
  }
  return text;
}

std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ByteTokenizer, RoundTripsAsciiUtf8AndArbitraryBytes) {
  auto tok = make_byte_tokenizer();
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eod_id(), 256);
  const std::string utf8 = "Grüße, 東京! \xF0\x9F\x98\x80\n\ttab";
  const std::vector<int32_t> ids = tok->encode(utf8);
  ASSERT_EQ(ids.size(), utf8.size());  // one id per byte, multi-byte characters included
  for (size_t i = 0; i < utf8.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(utf8[i])) << "byte " << i;
  EXPECT_EQ(tok->decode(ids), utf8);

  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  EXPECT_EQ(tok->decode(tok->encode(all_bytes)), all_bytes);
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(ByteTokenizer, DocumentEndsWithEodWhichDecodesToNothing) {
  auto tok = make_byte_tokenizer();
  const std::vector<int32_t> doc = encode_document(*tok, "ab");
  ASSERT_EQ(doc.size(), 3u);
  EXPECT_EQ(doc[0], 'a');
  EXPECT_EQ(doc[2], tok->eod_id());
  EXPECT_EQ(tok->decode(doc), "ab");
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { tok->decode({65, 257}); }), "257"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { tok->decode({-1}); }), "-1"));
}

TEST(MakeTokenizer, KindsAndErrors) {
  EXPECT_EQ(make_tokenizer("byte", "")->vocab_size(), 257);
  const std::string unknown = thrown_message<InvalidArgument>([] { make_tokenizer("gpt2", ""); });
  EXPECT_TRUE(contains(unknown, "'gpt2'") && contains(unknown, "sentencepiece, byte")) << unknown;
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([] { make_tokenizer("byte", "x.model"); }), "x.model"));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([] { make_tokenizer("sentencepiece", ""); }), "model file"));
}

TEST(SentencePiece, MissingOrBadModelFileNamesThePath) {
  const std::string missing = unique_temp_path("missing.model");
  const std::string msg = thrown_message<InvalidArgument>([&] { load_sentencepiece_tokenizer(missing); });
  EXPECT_TRUE(contains(msg, missing)) << msg;

  const std::string bad = write_text(unique_temp_path("bad.model"), "this is not a protobuf model\n");
  const std::string bad_msg = thrown_message<FormatError>([&] { load_sentencepiece_tokenizer(bad); });
  EXPECT_TRUE(contains(bad_msg, bad)) << bad_msg;
  std::remove(bad.c_str());
}

TEST(SentencePiece, TrainingRejectsBadArguments) {
  const std::string prefix = unique_temp_path("bad_args");
  const std::string missing = unique_temp_path("no_such_input.txt");
  EXPECT_TRUE(
      contains(thrown_message<InvalidArgument>([&] { train_sentencepiece_bpe({missing}, 400, prefix, 1); }), missing));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { train_sentencepiece_bpe({}, 400, prefix, 1); }),
                       "no input files"));
  const std::string input = write_text(unique_temp_path("small.txt"), generated_text(50));
  EXPECT_TRUE(contains(thrown_message<InvalidArgument>([&] { train_sentencepiece_bpe({input}, 100, prefix, 1); }),
                       "vocab_size 100"));
  SentencePieceBpeOptions tiny_sample;
  tiny_sample.input_sentence_size = 50;  // libsentencepiece requires 0 or > 100
  EXPECT_TRUE(
      contains(thrown_message<InvalidArgument>([&] { train_sentencepiece_bpe({input}, 400, prefix, 1, tiny_sample); }),
               "input_sentence_size"));
  // More pieces than the text can produce: libsentencepiece refuses, and the message says so.
  const std::string too_big =
      thrown_message<InvalidArgument>([&] { train_sentencepiece_bpe({input}, 50000, prefix, 1); });
  EXPECT_TRUE(contains(too_big, "libsentencepiece") && contains(too_big, "50000")) << too_big;
  std::remove(input.c_str());
}

class TrainedBpe : public ::testing::Test {
 protected:
  static constexpr int64_t kVocab = 640;
  void SetUp() override {
    input_ = write_text(unique_temp_path("corpus.txt"), generated_text(3000));
    prefix_ = unique_temp_path("bpe_a");
    train_sentencepiece_bpe({input_}, kVocab, prefix_, 1);
  }
  void TearDown() override {
    for (const auto& p : {input_, prefix_ + ".model", prefix_ + ".vocab"}) std::remove(p.c_str());
  }
  std::string input_, prefix_;
};

TEST_F(TrainedBpe, VocabSizeEodAndRoundTrip) {
  auto tok = load_sentencepiece_tokenizer(prefix_ + ".model");
  EXPECT_EQ(tok->vocab_size(), kVocab);
  EXPECT_EQ(tok->eod_id(), 2);
  EXPECT_TRUE(contains(tok->describe(), prefix_ + ".model"));

  const std::string text = "The model learns a token from every document.\nEach rank owns one matrix of weights.";
  const std::vector<int32_t> ids = tok->encode(text);
  EXPECT_EQ(tok->decode(ids), text);
  // BPE merged the frequent words: far fewer ids than bytes.
  EXPECT_LT(ids.size() * 3, text.size()) << ids.size() << " ids for " << text.size() << " bytes";
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, kVocab);
    EXPECT_NE(id, tok->eod_id());
  }
  // Characters never seen in training (and doubled spaces, tabs) still round-trip through byte fallback.
  const std::string unseen = "Zürich\t  東京 {x}";
  EXPECT_EQ(tok->decode(tok->encode(unseen)), unseen);

  const std::vector<int32_t> doc = encode_document(*tok, text);
  EXPECT_EQ(doc.back(), tok->eod_id());
  EXPECT_EQ(tok->decode(doc), text);
  const std::string msg = thrown_message<InvalidArgument>([&] { tok->decode({5, static_cast<int32_t>(kVocab)}); });
  EXPECT_TRUE(contains(msg, std::to_string(kVocab))) << msg;
}

TEST_F(TrainedBpe, TrainingIsDeterministicAcrossRunsAndThreadCounts) {
  // A second training in the same process (and with another thread count) gives the same pieces
  // and scores. The sample cap is below the line count, so the seeded shuffle is exercised too.
  const std::string again = unique_temp_path("bpe_b");
  const std::string threads = unique_temp_path("bpe_c");
  SentencePieceBpeOptions capped;
  capped.input_sentence_size = 200;
  const std::string capped_a = unique_temp_path("bpe_capped_a");
  const std::string capped_b = unique_temp_path("bpe_capped_b");
  train_sentencepiece_bpe({input_}, kVocab, again, 1);
  train_sentencepiece_bpe({input_}, kVocab, threads, 2);
  train_sentencepiece_bpe({input_}, kVocab, capped_a, 1, capped);
  train_sentencepiece_bpe({input_}, kVocab, capped_b, 2, capped);

  const std::string vocab = read_file(prefix_ + ".vocab");
  ASSERT_FALSE(vocab.empty());
  EXPECT_EQ(read_file(again + ".vocab"), vocab);
  EXPECT_EQ(read_file(threads + ".vocab"), vocab);
  EXPECT_EQ(read_file(capped_a + ".vocab"), read_file(capped_b + ".vocab"));

  const std::string text = "Each rank owns one matrix of weights, 1024 merges.";
  EXPECT_EQ(load_sentencepiece_tokenizer(again + ".model")->encode(text),
            load_sentencepiece_tokenizer(prefix_ + ".model")->encode(text));
  for (const auto& p : {again, threads, capped_a, capped_b}) {
    std::remove((p + ".model").c_str());
    std::remove((p + ".vocab").c_str());
  }
}

}  // namespace
}  // namespace orthotron

// tokenizer.cpp: the SentencePiece and byte tokenizers, and BPE training through libsentencepiece.
#include "engine/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <sys/stat.h>

#include <algorithm>
#include <unordered_map>

#include "base/errors.h"

namespace orthotron {
namespace {

constexpr int32_t kByteEod = 256;
constexpr int64_t kMinBpeVocab = 260;  // 256 byte pieces + unk/bos/eos + at least one more
constexpr int64_t kMaxBpeVocab = int64_t{1} << 20;

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string id_error(int32_t id, int64_t vocab, const std::string& who) {
  return who + ": cannot decode id " + std::to_string(id) + ": expected an id in [0, " + std::to_string(vocab) + ")";
}

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    std::transform(text.begin(), text.end(), ids.begin(),
                   [](char c) { return static_cast<int32_t>(static_cast<unsigned char>(c)); });
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (int32_t id : ids) {
      if (id == kByteEod) continue;
      if (id < 0 || id > kByteEod) throw InvalidArgument(id_error(id, vocab_size(), "byte tokenizer"));
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    }
    return text;
  }
  int64_t vocab_size() const override { return kByteEod + 1; }
  int32_t eod_id() const override { return kByteEod; }
  std::string describe() const override { return "byte tokenizer (ids 0..255 = bytes, eod id 256, vocab 257)"; }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    if (!is_regular_file(path)) {
      throw InvalidArgument("sentencepiece tokenizer: model file '" + path + "' does not exist or is not a file");
    }
    const auto status = processor_.Load(path);
    if (!status.ok()) {
      throw FormatError("sentencepiece tokenizer: '" + path +
                        "' is not a SentencePiece model (libsentencepiece: " + status.ToString() + ")");
    }
    vocab_ = processor_.GetPieceSize();
    eod_ = processor_.eos_id();
    if (eod_ < 0 || eod_ >= vocab_) {
      throw FormatError("sentencepiece tokenizer: model '" + path + "' has no </s> (eos) piece to end documents");
    }
  }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(text, &ids);
    if (!status.ok()) {
      throw InvalidArgument("sentencepiece tokenizer '" + path_ + "': cannot encode a text of " +
                            std::to_string(text.size()) + " bytes: " + status.ToString());
    }
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> in;
    in.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_)
        throw InvalidArgument(id_error(id, vocab_, "sentencepiece tokenizer '" + path_ + "'"));
      if (id != eod_) in.push_back(id);
    }
    std::string text;
    const auto status = processor_.Decode(in, &text);
    if (!status.ok()) {
      throw InvalidArgument("sentencepiece tokenizer '" + path_ + "': cannot decode: " + status.ToString());
    }
    return text;
  }
  int64_t vocab_size() const override { return vocab_; }
  int32_t eod_id() const override { return eod_; }
  std::string describe() const override {
    return "sentencepiece tokenizer " + path_ + " (vocab " + std::to_string(vocab_) + ", eod id " +
           std::to_string(eod_) + ")";
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
  int32_t vocab_ = 0;
  int32_t eod_ = -1;
};

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> encode_document(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int32_t> ids = tokenizer.encode(text);
  ids.push_back(tokenizer.eod_id());
  return ids;
}

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() {
  return std::make_unique<ByteTokenizer>();
}

void train_sentencepiece_bpe(const std::vector<std::string>& input_files, int64_t vocab_size,
                             const std::string& model_prefix, int num_threads, const SentencePieceBpeOptions& options) {
  const std::string who = "train_sentencepiece_bpe(" + model_prefix + ")";
  if (input_files.empty()) throw InvalidArgument(who + ": no input files");
  for (const auto& f : input_files) {
    if (f.find(',') != std::string::npos) {
      throw InvalidArgument(who + ": input file '" + f +
                            "' has a comma in its name (libsentencepiece splits on commas)");
    }
    if (!is_regular_file(f)) throw InvalidArgument(who + ": input file '" + f + "' does not exist or is not a file");
  }
  if (vocab_size < kMinBpeVocab || vocab_size > kMaxBpeVocab) {
    throw InvalidArgument(who + ": vocab_size " + std::to_string(vocab_size) + " is outside [" +
                          std::to_string(kMinBpeVocab) + ", " + std::to_string(kMaxBpeVocab) +
                          "] (256 byte pieces and unk/bos/eos come first)");
  }
  if (num_threads < 1) throw InvalidArgument(who + ": num_threads " + std::to_string(num_threads) + " must be >= 1");
  if (options.input_sentence_size < 0 || (options.input_sentence_size > 0 && options.input_sentence_size <= 100) ||
      options.max_sentence_length < 1) {
    throw InvalidArgument(who + ": input_sentence_size must be 0 or > 100, and max_sentence_length >= 1 (got " +
                          std::to_string(options.input_sentence_size) + ", " +
                          std::to_string(options.max_sentence_length) + ")");
  }
  const std::unordered_map<std::string, std::string> args = {
      {"input", join(input_files, ",")},
      {"model_prefix", model_prefix},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"num_threads", std::to_string(num_threads)},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"character_coverage", "0.9995"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"minloglevel", options.verbose ? "0" : "1"},
  };
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    throw InvalidArgument(who + ": libsentencepiece could not train a BPE model of vocab " +
                          std::to_string(vocab_size) + " on " + join(input_files, ", ") + ": " + status.ToString());
  }
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& model_path) {
  if (kind == "sentencepiece") {
    if (model_path.empty()) throw InvalidArgument("tokenizer kind 'sentencepiece' needs a model file (.model)");
    return load_sentencepiece_tokenizer(model_path);
  }
  if (kind == "byte") {
    if (!model_path.empty()) {
      throw InvalidArgument("tokenizer kind 'byte' takes no model file (got '" + model_path + "')");
    }
    return make_byte_tokenizer();
  }
  throw InvalidArgument("unknown tokenizer kind '" + kind + "' (valid kinds: sentencepiece, byte)");
}

}  // namespace orthotron

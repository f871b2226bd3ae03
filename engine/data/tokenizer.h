// tokenizer.h: the tokenizers of the GPT engine: SentencePiece models (Debian's libsentencepiece:
// load a .model, or train a BPE model on text files) and the byte-level tokenizer (bytes 0..255 plus
// an end-of-document id). Torch-free: depends on libsentencepiece and base/errors.h only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace orthotron {

/// Text <-> token ids. Implementations are immutable after construction; encode/decode are const and
/// safe to call from several threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer();
  /// The ids of `text` (any bytes), without the end-of-document id. Every id is in [0, vocab_size()).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  /// The text of `ids`; the end-of-document id decodes to nothing. InvalidArgument naming the id for
  /// an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  /// Number of ids, end-of-document included.
  virtual int64_t vocab_size() const = 0;
  /// The id that ends every document (Megatron's --append-eod).
  virtual int32_t eod_id() const = 0;
  /// One line for logs: kind, model path, vocabulary size, eod id.
  virtual std::string describe() const = 0;
};

/// encode(text) followed by eod_id(): one document as it goes into a dataset.
std::vector<int32_t> encode_document(const Tokenizer& tokenizer, const std::string& text);

/// Loads a SentencePiece model file (.model). decode(encode(t)) == t for valid UTF-8 `t` with models
/// trained by train_sentencepiece_bpe (identity normalization, byte fallback); invalid UTF-8
/// decodes with U+FFFD in place of the bad bytes, and other models may normalize the text.
/// The eod id is the model's </s> (eos) id. InvalidArgument naming the path when the file does not
/// exist; FormatError naming the path and libsentencepiece's message when it is not a model, or
/// when the model has no eos piece.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path);

/// Bytes 0..255 are ids 0..255; the end-of-document id is 256; vocab_size() is 257. Lossless for any
/// bytes (UTF-8 or not).
std::unique_ptr<Tokenizer> make_byte_tokenizer();

/// What train_sentencepiece_bpe passes to libsentencepiece beyond the vocabulary size.
struct SentencePieceBpeOptions {
  /// Lines sampled from the input for training (0: all; otherwise more than 100). With more lines
  /// than this, libsentencepiece keeps a reservoir sample (its sampler has a fixed seed). Caps
  /// training time and memory.
  int64_t input_sentence_size = 1000000;
  /// Lines longer than this many bytes are skipped by the trainer.
  int64_t max_sentence_length = 65536;
  /// Print libsentencepiece's training log to stderr (otherwise warnings and errors only).
  bool verbose = false;
};

/// Trains a SentencePiece BPE model of `vocab_size` pieces on the text files `input_files` (one
/// training sentence per line) and writes model_prefix + ".model" and ".vocab". Blocking.
/// Model: byte fallback (any byte encodes), identity normalization, whitespace kept as is, digits
/// split, unk/bos/eos = 0/1/2 (eos is the eod id), no pad.
/// Deterministic: the same files, vocab_size and options give the same pieces and scores (the
/// .vocab bytes; the .model also stores model_prefix), for any num_threads (tested, with and
/// without sampling): libsentencepiece 0.1.97 samples lines with a fixed seed and its BPE merges
/// do not depend on the thread count.
/// InvalidArgument naming the file for a missing input; for an empty input list, a vocab_size
/// below 260 or above 1 << 20, an input_sentence_size in [1, 100]; and with libsentencepiece's
/// message when training fails (e.g. a vocabulary too large for the text).
void train_sentencepiece_bpe(const std::vector<std::string>& input_files, int64_t vocab_size,
                             const std::string& model_prefix, int num_threads,
                             const SentencePieceBpeOptions& options = {});

/// "sentencepiece": load_sentencepiece_tokenizer(model_path); "byte": make_byte_tokenizer() (then
/// model_path must be empty). InvalidArgument naming the kind and the valid kinds otherwise.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& model_path);

}  // namespace orthotron

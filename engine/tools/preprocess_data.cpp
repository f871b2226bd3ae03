// preprocess_data.cpp: orthotron_preprocess, the data preparation of the GPT engine (Megatron's
// tools/preprocess_data.py with --append-eod): reads documents from .jsonl or text files, optionally
// trains a SentencePiece BPE model on them first, tokenizes them on several threads and writes a
// Megatron indexed dataset (prefix.bin/.idx). Run with --help for the options.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "base/errors.h"
#include "document_reader.h"
#include "engine/data/indexed_dataset.h"
#include "engine/data/tokenizer.h"
#include "progress_meter.h"

namespace orthotron {
namespace {

constexpr const char* kUsage = R"(usage: orthotron_preprocess --input FILE [--input FILE ...] --output-prefix PREFIX
                            --tokenizer sentencepiece|byte
                            [--tokenizer-model FILE | --train-tokenizer --vocab-size N --tokenizer-prefix P]
                            [--json-key KEY] [--workers N] [--input-sentence-size N] [--quiet]

Tokenizes documents into a Megatron indexed dataset PREFIX.bin / PREFIX.idx (one sequence per
document, each ending with the tokenizer's end-of-document id, like Megatron's --append-eod). The
token dtype is the smallest that holds the vocabulary (uint8, uint16 or int32).

Inputs (read in the order given):
  --input FILE            a .jsonl file (one JSON object per line; its --json-key string is one
                          document) or any other file (the whole file is one document). Repeatable.
  --json-key KEY          the key of the text in jsonl records (default: text)

Tokenizer:
  --tokenizer KIND        sentencepiece or byte (bytes 0..255, end-of-document id 256)
  --tokenizer-model FILE  a SentencePiece .model to use (kind sentencepiece)
  --train-tokenizer       first train a SentencePiece BPE model on the inputs' documents (one
                          training sentence per line), written to P.model and P.vocab, then use it
  --vocab-size N          vocabulary of the trained model (>= 260: 256 byte pieces + unk/bos/eos)
  --tokenizer-prefix P    where the trained model goes
  --input-sentence-size N lines sampled for training (default 1000000; 0: all). Deterministic.

Other:
  --output-prefix PREFIX  writes PREFIX.bin and PREFIX.idx (atomically: complete files or none)
  --workers N             tokenizing (and training) threads (default: all cores)
  --quiet                 no progress line
  --help                  this text

Progress goes to stderr; the result lines (trained tokenizer, final summary) to stdout. Exit
status 0 on success, 1 on an error (the message names the file and, for jsonl, the line), 2 on a
usage error.
)";

struct Args {
  std::vector<std::string> inputs;
  std::string output_prefix;
  std::string tokenizer;
  std::string tokenizer_model;
  bool train_tokenizer = false;
  int64_t vocab_size = 0;
  std::string tokenizer_prefix;
  std::string json_key = "text";
  int workers = 0;
  int64_t input_sentence_size = SentencePieceBpeOptions{}.input_sentence_size;
  bool quiet = false;
};

struct UsageError : InvalidArgument {
  using InvalidArgument::InvalidArgument;
};

int64_t parse_int(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const long long v = std::stoll(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + " expects an integer, got '" + value + "'");
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (flag == "--input") {
      a.inputs.push_back(value());
    } else if (flag == "--output-prefix") {
      a.output_prefix = value();
    } else if (flag == "--tokenizer") {
      a.tokenizer = value();
    } else if (flag == "--tokenizer-model") {
      a.tokenizer_model = value();
    } else if (flag == "--train-tokenizer") {
      a.train_tokenizer = true;
    } else if (flag == "--vocab-size") {
      a.vocab_size = parse_int(flag, value());
    } else if (flag == "--tokenizer-prefix") {
      a.tokenizer_prefix = value();
    } else if (flag == "--json-key") {
      a.json_key = value();
    } else if (flag == "--workers") {
      a.workers = static_cast<int>(parse_int(flag, value()));
    } else if (flag == "--input-sentence-size") {
      a.input_sentence_size = parse_int(flag, value());
    } else if (flag == "--quiet") {
      a.quiet = true;
    } else {
      throw UsageError("unknown option '" + flag + "' (see --help)");
    }
  }
  if (a.inputs.empty()) throw UsageError("no --input given");
  if (a.output_prefix.empty()) throw UsageError("no --output-prefix given");
  if (a.tokenizer != "sentencepiece" && a.tokenizer != "byte") {
    throw UsageError("--tokenizer must be sentencepiece or byte, got '" + a.tokenizer + "'");
  }
  if (a.train_tokenizer) {
    if (a.tokenizer != "sentencepiece") throw UsageError("--train-tokenizer needs --tokenizer sentencepiece");
    if (!a.tokenizer_model.empty()) throw UsageError("--train-tokenizer and --tokenizer-model exclude each other");
    if (a.vocab_size <= 0 || a.tokenizer_prefix.empty()) {
      throw UsageError("--train-tokenizer needs --vocab-size N and --tokenizer-prefix P");
    }
  } else if (a.tokenizer == "sentencepiece" && a.tokenizer_model.empty()) {
    throw UsageError("--tokenizer sentencepiece needs --tokenizer-model FILE or --train-tokenizer");
  } else if (a.tokenizer == "byte" && !a.tokenizer_model.empty()) {
    throw UsageError("--tokenizer byte takes no --tokenizer-model");
  }
  if (a.workers <= 0) a.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return a;
}

/// Writes every document's text, one after another with a newline between, to `path`: the
/// training text of the BPE model (libsentencepiece trains on lines).
void write_training_text(const Args& a, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw FormatError("cannot write the tokenizer training text '" + path + "'");
  for (const auto& input : a.inputs) {
    DocumentReader reader(input, a.json_key);
    Document doc;
    while (reader.next(doc)) out << doc.text << '\n';
  }
  out.flush();
  if (!out) throw FormatError("write error on the tokenizer training text '" + path + "'");
}

/// Encodes docs[i] into ids[i] on `workers` threads (document i goes to thread i % workers). An
/// error is rethrown on the calling thread, prefixed with the document's origin.
void encode_batch(const Tokenizer& tok, const std::vector<Document>& docs, std::vector<std::vector<int32_t>>& ids,
                  int workers) {
  ids.assign(docs.size(), {});
  const int n = std::max(1, std::min<int>(workers, static_cast<int>(docs.size())));
  std::vector<std::exception_ptr> errors(n);
  auto work = [&](int w) {
    size_t i = static_cast<size_t>(w);
    try {
      for (; i < docs.size(); i += n) ids[i] = encode_document(tok, docs[i].text);
    } catch (const std::exception& e) {
      errors[w] = std::make_exception_ptr(InvalidArgument(docs[i].origin + ": cannot tokenize: " + e.what()));
    }
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < n; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

int run(const Args& a) {
  int64_t total_bytes = 0;
  for (const auto& input : a.inputs) total_bytes += input_file_size(input);

  std::string model = a.tokenizer_model;
  if (a.train_tokenizer) {
    ProgressMeter clock(0);
    const std::string text = a.tokenizer_prefix + ".train.txt";
    write_training_text(a, text);
    if (!a.quiet)
      std::fprintf(stderr, "training a SentencePiece BPE model of vocab %lld ...\n", (long long)a.vocab_size);
    SentencePieceBpeOptions options;
    options.input_sentence_size = a.input_sentence_size;
    try {
      train_sentencepiece_bpe({text}, a.vocab_size, a.tokenizer_prefix, a.workers, options);
    } catch (...) {
      std::remove(text.c_str());
      throw;
    }
    std::remove(text.c_str());
    model = a.tokenizer_prefix + ".model";
    std::printf("orthotron_preprocess: trained tokenizer %s (vocab %lld) in %.1f s\n", model.c_str(),
                (long long)a.vocab_size, clock.elapsed_s());
    std::fflush(stdout);
  }
  const auto tok = make_tokenizer(a.tokenizer, model);
  const TokenDtype dtype = smallest_token_dtype(tok->vocab_size());
  if (!a.quiet) {
    std::fprintf(stderr, "%s; %s tokens; %d workers; %zu input files (%s)\n", tok->describe().c_str(),
                 token_dtype_name(dtype).c_str(), a.workers, a.inputs.size(), human_bytes(total_bytes).c_str());
  }

  IndexedDatasetBuilder builder(a.output_prefix, dtype);
  ProgressMeter progress(total_bytes);
  constexpr size_t kBatchBytes = size_t{4} << 20;
  constexpr size_t kBatchDocs = 4096;
  int64_t bytes_before = 0;  // bytes of the inputs already finished
  int64_t bytes_done = 0;
  std::vector<Document> batch;
  std::vector<std::vector<int32_t>> ids;
  auto flush = [&] {
    encode_batch(*tok, batch, ids, a.workers);
    for (const auto& doc_ids : ids) builder.add_document(doc_ids);
    batch.clear();
    if (!a.quiet) progress.update(bytes_done, builder.documents(), builder.tokens());
  };
  for (const auto& input : a.inputs) {
    DocumentReader reader(input, a.json_key);
    size_t batch_bytes = 0;
    Document doc;
    while (reader.next(doc)) {
      batch_bytes += doc.text.size();
      batch.push_back(std::move(doc));
      bytes_done = bytes_before + reader.bytes_read();
      if (batch.size() >= kBatchDocs || batch_bytes >= kBatchBytes) {
        flush();
        batch_bytes = 0;
      }
    }
    bytes_before += input_file_size(input);
    bytes_done = bytes_before;
  }
  if (!batch.empty()) flush();
  builder.finalize();
  const double seconds = progress.elapsed_s();
  if (!a.quiet) progress.finish(bytes_done, builder.documents(), builder.tokens());
  std::printf("orthotron_preprocess: %lld documents, %lld tokens (%s) in %.2f s (%.0f tokens/s) -> %s.bin %s.idx\n",
              (long long)builder.documents(), (long long)builder.tokens(), token_dtype_name(dtype).c_str(), seconds,
              builder.tokens() / std::max(seconds, 1e-9), a.output_prefix.c_str(), a.output_prefix.c_str());
  return 0;
}

}  // namespace
}  // namespace orthotron

int main(int argc, char** argv) {
  try {
    return orthotron::run(orthotron::parse_args(argc, argv));
  } catch (const orthotron::UsageError& e) {
    std::fprintf(stderr, "orthotron_preprocess: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "orthotron_preprocess: error: %s\n", e.what());
    return 1;
  }
}

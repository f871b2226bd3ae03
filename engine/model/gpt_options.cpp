// gpt_options.cpp: validation of the GPT decoder's options.
#include "engine/model/gpt_options.h"

#include <cmath>
#include <sstream>
#include <string>

#include "base/errors.h"

namespace orthotron {

namespace {

void require_positive(const char* field, int64_t value) {
  if (value < 1) {
    throw ConfigError("model." + std::string(field) + " = " + std::to_string(value) + " must be >= 1");
  }
}

void require_positive_finite(const char* field, double value) {
  if (!(value > 0.0) || !std::isfinite(value)) {
    std::ostringstream os;
    os << "model." << field << " = " << value << " must be a finite number > 0";
    throw ConfigError(os.str());
  }
}

}  // namespace

std::string gpt_shape_problem(const GptOptions& o) {
  if (o.num_attention_heads < 1 || o.num_query_groups < 1) return "";  // require_positive names these
  if (o.hidden_size % o.num_attention_heads != 0) {
    return "model.hidden_size = " + std::to_string(o.hidden_size) +
           " must be a multiple of model.num_attention_heads = " + std::to_string(o.num_attention_heads);
  }
  if (o.num_attention_heads % o.num_query_groups != 0) {
    return "model.num_attention_heads = " + std::to_string(o.num_attention_heads) +
           " must be a multiple of model.num_query_groups = " + std::to_string(o.num_query_groups);
  }
  if (o.head_dim() % 2 != 0) {
    return "model.hidden_size / model.num_attention_heads = " + std::to_string(o.head_dim()) +
           " (head_dim) must be even: rotary embeddings rotate pairs of channels";
  }
  return "";
}

void validate_gpt_options(const GptOptions& o) {
  require_positive("num_layers", o.num_layers);
  require_positive("hidden_size", o.hidden_size);
  require_positive("num_attention_heads", o.num_attention_heads);
  require_positive("num_query_groups", o.num_query_groups);
  require_positive("ffn_hidden_size", o.ffn_hidden_size);
  require_positive("vocab_size", o.vocab_size);
  require_positive("max_seq_length", o.max_seq_length);
  if (const std::string problem = gpt_shape_problem(o); !problem.empty()) throw ConfigError(problem);
  require_positive_finite("rotary_base", o.rotary_base);
  require_positive_finite("norm_epsilon", o.norm_epsilon);
  require_positive_finite("init_std", o.init_std);
}

}  // namespace orthotron

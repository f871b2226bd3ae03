// demo_train.cpp: orthotron_demo, the optimizer demo until the GPT engine lands: trains a small
// MLP language model on a synthetic Markov-chain token stream with MuonWithAdamW configured from
// YAML, printing the loss against the chain's entropy (the best achievable loss).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "parallel/errors.h"
#include "optim/optimizer_config.h"

namespace {

constexpr const char* kUsage = R"(orthotron_demo: train a small MLP language model with MuonWithAdamW.

usage: orthotron_demo [--config FILE] [--steps N] [--save FILE] [--resume FILE] [--help]

  --config FILE   YAML file with an `optimizer` section (default: configs/demo.yaml)
  --steps N       optimizer steps to run (default 200)
  --save FILE     write the optimizer state (safetensors) at the end
  --resume FILE   load optimizer state from FILE before training (strict: any mismatch is an error)
  --help          this text

The data is a synthetic token stream from a fixed random Markov chain (vocabulary 64); the chain's
entropy is the lowest loss any model can reach, and is printed beside the loss.
)";

struct Args {
  std::string config = "configs/demo.yaml";
  int steps = 200;
  std::string save, resume;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw orthotron::InvalidArgument("option " + k + " needs a value");
      return argv[++i];
    };
    if (k == "--help" || k == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (k == "--config") {
      a.config = value();
    } else if (k == "--steps") {
      a.steps = std::stoi(value());
      if (a.steps < 0) throw orthotron::InvalidArgument("--steps must be >= 0");
    } else if (k == "--save") {
      a.save = value();
    } else if (k == "--resume") {
      a.resume = value();
    } else {
      throw orthotron::InvalidArgument("unknown option '" + k + "' (see --help)");
    }
  }
  return a;
}

constexpr int64_t kVocab = 64, kDim = 64, kHidden = 256, kLayers = 2, kBatch = 256;

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    at::manual_seed(0);
    // The Markov chain: each token's successor distribution is a sharp random softmax.
    const at::Tensor transition = at::softmax(at::randn({kVocab, kVocab}) * 3.0, 1);
    const double entropy = -(transition * transition.log()).sum(1).mean().item<double>();

    auto param = [](std::vector<int64_t> shape, double scale) { return (at::randn(shape) * scale).requires_grad_(true); };
    orthotron::NamedParameters params = {{"embed.weight", param({kVocab, kDim}, 1.0)}};
    for (int64_t l = 0; l < kLayers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      params.push_back({p + "norm.weight", at::ones({kDim}).requires_grad_(true)});
      params.push_back({p + "fc1.weight", param({kHidden, kDim}, 1.0 / std::sqrt(kDim))});
      params.push_back({p + "fc1.bias", at::zeros({kHidden}).requires_grad_(true)});
      params.push_back({p + "fc2.weight", param({kDim, kHidden}, 1.0 / std::sqrt(kHidden))});
    }
    params.push_back({"norm_f.weight", at::ones({kDim}).requires_grad_(true)});
    params.push_back({"head.weight", param({kVocab, kDim}, 1.0 / std::sqrt(kDim))});
    auto by_name = [&](const std::string& n) -> const at::Tensor& {
      for (const auto& p : params) {
        if (p.name == n) return p.tensor;
      }
      throw orthotron::InvalidArgument("no parameter " + n);
    };

    const orthotron::OptimizerConfig config = orthotron::load_optimizer_config(args.config);
    std::printf("resolved configuration (%s):\n%s\n\n", args.config.c_str(),
                orthotron::optimizer_config_to_yaml(config).c_str());
    auto opt = orthotron::make_muon_with_adamw(params, config);
    std::printf("parameter assignment:\n%s\n", opt->assignment_table().c_str());
    if (!args.resume.empty()) {
      opt->load(args.resume);
      std::printf("resumed optimizer state from %s\n", args.resume.c_str());
    }

    auto rms_norm = [](const at::Tensor& x, const at::Tensor& w) {
      return x * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * w;
    };
    const auto start = std::chrono::steady_clock::now();
    for (int step = 1; step <= args.steps; ++step) {
      const at::Tensor tokens = at::randint(kVocab, {kBatch}, at::kLong);
      const at::Tensor targets = at::multinomial(transition.index_select(0, tokens), 1).squeeze(1);
      at::Tensor x = at::embedding(by_name("embed.weight"), tokens);
      for (int64_t l = 0; l < kLayers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        at::Tensor h = rms_norm(x, by_name(p + "norm.weight"));
        h = at::gelu(at::linear(h, by_name(p + "fc1.weight"), by_name(p + "fc1.bias")));
        x = x + at::linear(h, by_name(p + "fc2.weight"));
      }
      const at::Tensor logits = at::linear(rms_norm(x, by_name("norm_f.weight")), by_name("head.weight"));
      const at::Tensor loss = at::cross_entropy_loss(logits, targets);
      opt->zero_grad();
      loss.backward();
      opt->step();
      if (step == 1 || step % 20 == 0 || step == args.steps) {
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / step;
        std::printf("step %4d/%d | loss %.4f | entropy floor %.4f | %.1f ms/step\n", step, args.steps,
                    loss.item<double>(), entropy, ms);
      }
    }
    if (!args.save.empty()) {
      opt->save(args.save);
      std::printf("saved optimizer state to %s\n", args.save.c_str());
    }
    return 0;
  } catch (const orthotron::Error& e) {
    std::fprintf(stderr, "orthotron_demo: error: %s\n", e.what());
    return 2;
  }
}

// demo_train.cpp: orthotron_demo, the optimizer demo until the GPT engine lands: trains a small
// MLP language model on a synthetic Markov-chain token stream with the distributed MuonWithAdamW
// (one data-parallel rank per MPI process; each rank draws its own batches) configured from YAML,
// printing the loss averaged over ranks against the chain's entropy (the best achievable loss).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/errors.h"
#include "engine/optimizer_state_files.h"
#include "optim/distributed_muon_with_adamw.h"
#include "optim/optimizer_config.h"
#include "parallel/mpi_runtime.h"

namespace {

constexpr const char* kUsage = R"(orthotron_demo: train a small MLP language model with the distributed MuonWithAdamW.

usage: mpirun -np N orthotron_demo [--config FILE] [--steps N] [--save FILE] [--resume FILE] [--help]
       (or launch/launch.sh N build/bin/orthotron_demo ...; without mpirun it runs as one rank)

  --config FILE   YAML file with an `optimizer` section (default: configs/demo.yaml)
  --steps N       optimizer steps to run (default 200)
  --save FILE     write the optimizer state at the end: one safetensors file per rank,
                  FILE with ".rankRRRRR-of-WWWWW" inserted before the extension
  --resume FILE   load the optimizer state saved with --save FILE at the same rank count
                  (strict: any mismatch is an error on every rank). The config's hyperparameters
                  win over the saved ones; every difference is printed
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
      const std::string v = value();
      size_t used = 0;
      long long n = -1;
      try {
        n = std::stoll(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || n < 0 || n > 100000000) {
        throw orthotron::InvalidArgument("--steps must be an integer in [0, 100000000], got '" + v + "'");
      }
      a.steps = static_cast<int>(n);
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
  return orthotron::run_distributed_main(argc, argv, [](int ac, char** av) {
    const Args args = parse_args(ac, av);
    auto world = orthotron::mpi_world();
    const bool lead = world->rank() == 0;
    at::manual_seed(0);  // the same model and chain on every rank
    // The Markov chain: each token's successor distribution is a sharp random softmax.
    const at::Tensor transition = at::softmax(at::randn({kVocab, kVocab}) * 3.0, 1);
    const double entropy = -(transition * transition.log()).sum(1).mean().item<double>();

    auto param = [](std::vector<int64_t> shape, double scale) {
      return (at::randn(shape) * scale).requires_grad_(true);
    };
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
    auto opt = std::make_unique<orthotron::DistributedMuonWithAdamW>(params, *world, config.groups, config.rules);
    if (lead) {
      std::printf("orthotron_demo: %d data-parallel rank(s)\nresolved configuration (%s):\n%s\n\n", world->size(),
                  args.config.c_str(), orthotron::optimizer_config_to_yaml(config).c_str());
      std::printf("parameter assignment:\n%s\n%s\n\n", opt->assignment_table().c_str(), opt->plan().summary().c_str());
    }
    if (!args.resume.empty()) {
      const orthotron::LoadReport report = orthotron::load_optimizer_state(*opt, args.resume, world.get());
      if (lead) std::printf("resumed optimizer state from %s: %s\n", args.resume.c_str(), report.to_string().c_str());
    }
    at::manual_seed(1 + static_cast<uint64_t>(world->rank()));  // each rank draws its own batches

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
        at::Tensor mean_loss = loss.detach().reshape({1}).to(at::kFloat);
        world->all_reduce(mean_loss, orthotron::ReduceOp::kAvg);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / step;
        if (lead) {
          std::printf("step %4d/%d | lm loss %.4f | entropy floor %.4f | %.1f ms/step | %lld samples\n", step,
                      args.steps, mean_loss.item<double>(), entropy, ms,
                      static_cast<long long>(step) * kBatch * world->size());
        }
      }
    }
    if (!args.save.empty()) {
      orthotron::save_optimizer_state(*opt, args.save, world.get());
      if (lead) {
        std::printf("saved optimizer state to %s\n", orthotron::rank_state_path(args.save, 0, world->size()).c_str());
      }
    }
    return 0;
  });
}

// pretrain_main.cpp: orthotron_pretrain, GPT pretraining from one YAML file, data parallel over the
// MPI ranks it is launched with (launch/launch.sh N build/bin/orthotron_pretrain --config ...).
#include <cstdio>
#include <string>
#include <vector>

#include "base/errors.h"
#include "engine/config/engine_config.h"
#include "engine/train/trainer.h"
#include "parallel/mpi_runtime.h"

namespace {

constexpr const char* kUsage = R"(orthotron_pretrain: Megatron-style GPT pretraining with the distributed MuonWithAdamW.

usage: mpirun -np N orthotron_pretrain --config FILE [--set KEY=VALUE]... [--print-config] [--help]
       (or launch/launch.sh N build/bin/orthotron_pretrain ...; without mpirun it runs as one rank)

  --config FILE      the run's YAML (sections model, data, training, optimizer, splits, parallel,
                     logging; see configs/gpt_tiny.yaml, which documents every key)
  --set KEY=VALUE    override one key with its dotted path, e.g. --set training.train_iters=20
                     or --set optimizer.groups.muon.lr=0.01; validated like the file (repeatable)
  --print-config     print the resolved configuration and exit
  --help             this text

Rank 0 prints a Megatron-style log line per logging.log_interval iterations and writes
<logging.output_dir>/log.txt, metrics.jsonl and config.yaml (the resolved configuration).
)";

struct Args {
  std::string config;
  std::vector<std::string> overrides;
  bool print_config = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw orthotron::InvalidArgument("option " + k + " needs a value (see --help)");
      return argv[++i];
    };
    if (k == "--help" || k == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (k == "--config") {
      a.config = value();
    } else if (k == "--set") {
      a.overrides.push_back(value());
    } else if (k.rfind("--set=", 0) == 0) {
      a.overrides.push_back(k.substr(6));
    } else if (k == "--print-config") {
      a.print_config = true;
    } else {
      throw orthotron::InvalidArgument("unknown option '" + k + "' (see --help)");
    }
  }
  if (a.config.empty()) throw orthotron::InvalidArgument("--config FILE is required (see --help)");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  return orthotron::run_distributed_main(argc, argv, [](int ac, char** av) {
    const Args args = parse_args(ac, av);
    const orthotron::EngineConfig config = orthotron::load_engine_config(args.config, args.overrides);
    auto world = orthotron::mpi_world();
    if (args.print_config) {
      if (world->rank() == 0) std::fputs(orthotron::engine_config_to_yaml(config).c_str(), stdout);
      return 0;
    }
    orthotron::Trainer trainer(config, *world);
    trainer.train();
    return 0;
  });
}

// bench_muon_step.cpp: one single-process MuonWithAdamW step over the benchmark GPT (8 layers,
// hidden 512, GQA 8/4, SwiGLU 1536, vocab 8192: 33.6M parameters; hidden matrices on Muon,
// embeddings, head, norms and biases on AdamW) against torch.optim.Muon + torch.optim.AdamW(fused)
// on the same shapes, NS dtype and threads, in the cached Python, measured side by side in
// alternating rounds. Besides the whole step, each side's parts are timed alone on the same
// shapes, to say where the time goes: Newton-Schulz over every Muon matrix, the AdamW step, and
// (ours) the global gradient norm and the Muon updates W <- W (1 - lr wd) - lr scale O from results in the layout
// Newton-Schulz leaves them (a tall matrix's is a transposed view), one matrix per thread as the step applies
// them, through the fused pass and through its ATen reference. Ours runs four times per round, all with ns_parallel:
// matrices (one thread per matrix; products, BLAS threading every product, was the slower one: 393 against 361 ms with
// ns_gram off on the AMD EPYC development machine, 2 threads): the plain NS iteration (ns_gram: off) and ns_gram: auto
// (the Gram iteration for matrices with aspect ratio about 2 and more), each with full products and with ns_symmetric
// (symmetric products as their upper block triangle). torch's NS always computes in bfloat16 (torch.optim._muon), so
// the step ratio is at the same NS dtype only with --ns-dtype bfloat16 (the default).
//   bench_muon_step [--threads T] [--steps N] [--rounds R] [--ns-dtype D] [--splits none|qkv] [--python P]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../tests/support/gpt_fixture.h"
#include "bench_python.h"
#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/muon_batch.h"
#include "optim/muon_with_adamw.h"
#include "optim/optimizer.h"

namespace {

using orthotron::NamedParameters;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Median ms of `steps` calls of `body` after one warm-up call; `before` runs untimed before each.
double time_ms(int steps, const std::function<void()>& before, const std::function<void()>& body) {
  std::vector<double> ms;
  for (int i = -1; i < steps; ++i) {
    before();
    const auto t0 = std::chrono::steady_clock::now();
    body();
    if (i >= 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(ms);
}

/// Per-round medians of one side or variant (a part it does not time stays empty).
struct Figures {
  std::vector<double> step, ns, adamw, norm, update, update_reference;
};

/// One of our configurations: the optimizer over its own copy of the parameters.
struct Variant {
  std::string name;
  orthotron::NsOptions ns;
  NamedParameters params;
  std::unique_ptr<orthotron::MuonWithAdamW> opt;
  Figures figures;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int steps = 5, rounds = 3;
  std::string ns_dtype = "bfloat16", splits_mode = "none", python = ORTHOTRON_PYTHON_DEFAULT;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : "0"); };
    if (a == "--threads") {
      threads = std::stoi(next());
    } else if (a == "--steps") {
      steps = std::stoi(next());
    } else if (a == "--rounds") {
      rounds = std::stoi(next());
    } else if (a == "--ns-dtype") {
      ns_dtype = next();
    } else if (a == "--splits") {
      splits_mode = next();
    } else if (a == "--python") {
      python = next();
    } else {
      std::printf(
          "usage: bench_muon_step [--threads T] [--steps N] [--rounds R] [--ns-dtype float32|bfloat16] "
          "[--splits none|qkv] [--python PATH]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  at::set_num_threads(threads);
  c10::NoGradGuard no_grad;
  const auto shape = orthotron::testing::benchmark_gpt_shape();
  const orthotron::SplitRegistry splits =
      splits_mode == "qkv" ? orthotron::testing::gpt_splits(shape) : orthotron::SplitRegistry{};
  // Both sides: Keller Jordan's quintic, 5 steps, momentum 0.95 Nesterov, weight decay 0.1 on
  // Muon (torch's default); AdamW betas (0.9, 0.95), weight decay 0.01.
  std::vector<orthotron::ParamGroup> groups = orthotron::default_groups();
  for (auto& g : groups) {
    g.muon.lr = 0.02;
    g.muon.weight_decay = 0.1;
    g.muon.ns.compute_dtype = orthotron::parse_ns_dtype(ns_dtype);
    g.adamw.beta2 = 0.95;
  }
  NamedParameters params = orthotron::testing::gpt_params(shape, 1);
  for (auto& p : params) p.tensor = p.tensor.detach();
  std::vector<Variant> variants;
  struct VariantSpec {
    const char* name;
    orthotron::NsGram gram;
    bool symmetric;
  };
  for (const VariantSpec& spec :
       std::vector<VariantSpec>{{"ns_gram off (the defaults)", orthotron::NsGram::kOff, false},
                                {"ns_gram auto", orthotron::NsGram::kAuto, false},
                                {"ns_gram off, ns_symmetric", orthotron::NsGram::kOff, true},
                                {"ns_gram auto, ns_symmetric", orthotron::NsGram::kAuto, true}}) {
    Variant v;
    v.name = spec.name;
    std::vector<orthotron::ParamGroup> g = groups;
    for (auto& group : g) {
      group.muon.ns.gram = spec.gram;
      group.muon.ns.parallel = orthotron::NsParallel::kMatrices;
      group.muon.ns.symmetric = spec.symmetric;
    }
    v.ns = g[0].muon.ns;
    for (const auto& p : params) v.params.push_back({p.name, p.tensor.clone()});
    v.opt = std::make_unique<orthotron::MuonWithAdamW>(v.params, g, orthotron::default_routing_rules(), splits);
    variants.push_back(std::move(v));
  }
  const orthotron::MuonWithAdamW& opt = *variants[0].opt;

  // The shapes file for the Python side: every matrix NS sees ("muon m n"; split parts are their
  // own matrices there) and every AdamW parameter ("adamw d0 d1 ...").
  std::vector<at::Tensor> grads, adamw_params, adamw_grads;
  std::map<std::tuple<int64_t, int64_t>, int64_t> ns_batches;  // (m, n) -> count, as the step batches them
  const std::string shapes = "/tmp/orthotron_bench_muon_step_" + std::to_string(::getpid()) + ".txt";
  int64_t muon_numel = 0, adamw_numel = 0;
  {
    std::ofstream out(shapes);
    at::manual_seed(2);
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& plan = opt.plan()[i];
      grads.push_back(at::randn(params[i].tensor.sizes()) * 0.01);
      if (plan.algorithm == orthotron::Algorithm::kMuon) {
        muon_numel += plan.numel();
        for (const auto& mat : plan.matrices) {
          ns_batches[{mat.m, mat.n}] += mat.count;
          for (int64_t k = 0; k < mat.count; ++k) out << "muon " << mat.m << " " << mat.n << "\n";
        }
      } else {
        adamw_numel += plan.numel();
        adamw_params.push_back(params[i].tensor.clone());
        adamw_grads.push_back(grads.back());
        out << "adamw";
        for (int64_t d : plan.shape) out << " " << d;
        out << "\n";
      }
    }
  }
  std::vector<at::Tensor> ns_inputs;
  for (const auto& [mn, count] : ns_batches) ns_inputs.push_back(at::randn({count, std::get<0>(mn), std::get<1>(mn)}));
  // The Muon updates alone: every matrix's weight and a Newton-Schulz result in the NS dtype, laid out
  // as newton_schulz_matrix returns it.
  std::vector<at::Tensor> update_weights, update_results;
  for (const auto& [mn, count] : ns_batches) {
    const auto [m, n] = mn;
    for (int64_t k = 0; k < count; ++k) {
      update_weights.push_back(at::randn({m, n}));
      const at::ScalarType dt = orthotron::ns_compute_dtype(groups[0].muon.ns, update_weights.back());
      update_results.push_back(m > n ? at::randn({n, m}).to(dt).t() : at::randn({m, n}).to(dt));
    }
  }
  auto apply_updates = [&](bool fused) {
    at::parallel_for(0, static_cast<int64_t>(update_weights.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        at::Tensor& w = update_weights[static_cast<size_t>(i)];
        const at::Tensor& o = update_results[static_cast<size_t>(i)];
        if (fused) {
          orthotron::muon_apply_update(w, o, groups[0].muon, "w");
        } else {
          orthotron::muon_apply_update_reference(w, o, groups[0].muon, "w");
        }
      }
    });
  };
  std::vector<orthotron::AdamWState> adamw_states(adamw_params.size());
  const orthotron::AdamWOptions adamw_options = groups[1].adamw;

  std::printf(
      "bench_muon_step: %d thread(s), NS dtype %s, splits %s; Muon %lld elements in %zu NS batches, "
      "AdamW %lld elements in %zu tensors\n",
      threads, ns_dtype.c_str(), splits_mode.c_str(), static_cast<long long>(muon_numel), ns_inputs.size(),
      static_cast<long long>(adamw_numel), adamw_params.size());
  const std::string script = std::string(ORTHOTRON_SOURCE_DIR_DEFAULT) + "/bench/python/torch_muon_step.py";
  Figures ours, torch;
  for (int r = 0; r < rounds; ++r) {
    for (auto& v : variants) {
      v.figures.step.push_back(time_ms(
          steps,
          [&] {
            for (size_t i = 0; i < v.params.size(); ++i) v.params[i].tensor.mutable_grad() = grads[i].clone();
          },
          [&] { v.opt->step(); }));
      v.figures.ns.push_back(time_ms(
          steps, [] {},
          [&] {
            if (v.ns.parallel == orthotron::NsParallel::kMatrices) {
              std::vector<orthotron::NsMatrixJob> jobs;
              std::vector<at::Tensor> outs;
              for (const auto& x : ns_inputs) {
                outs.push_back(at::empty_like(x));
                for (int64_t i = 0; i < x.size(0); ++i)
                  jobs.push_back(orthotron::ns_job_into(x[i], outs.back()[i], &v.ns));
              }
              orthotron::run_ns_matrix_parallel(jobs);
              return;
            }
            for (const auto& x : ns_inputs) orthotron::newton_schulz(x, v.ns);
          }));
    }
    ours.adamw.push_back(time_ms(
        steps, [] {},
        [&] {
          for (size_t i = 0; i < adamw_params.size(); ++i) {
            orthotron::adamw_step(adamw_params[i], adamw_grads[i], adamw_states[i], adamw_options);
          }
        }));
    ours.norm.push_back(time_ms(
        steps, [] {}, [&] { orthotron::global_l2_norm(grads); }));
    ours.update.push_back(time_ms(
        steps, [] {}, [&] { apply_updates(true); }));
    ours.update_reference.push_back(time_ms(
        steps, [] {}, [&] { apply_updates(false); }));
    const auto py =
        orthotron::bench::run_python_figures(python + " " + script + " " + shapes + " --threads " +
                                                 std::to_string(threads) + " --steps " + std::to_string(steps),
                                             "step_ms", "bench_muon_step");
    if (py.empty()) return 1;
    torch.step.push_back(py.at("step_ms"));
    torch.ns.push_back(py.at("ns_ms"));
    torch.adamw.push_back(py.at("adamw_ms"));
    std::printf("  round %d:", r + 1);
    for (const auto& v : variants) {
      std::printf(" %s: step %.1f ms (NS %.1f);", v.name.c_str(), v.figures.step.back(), v.figures.ns.back());
    }
    std::printf(
        " AdamW %.1f, norm %.1f, Muon updates %.1f (reference %.1f); torch step %.1f ms (NS %.1f, AdamW %.1f)\n",
        ours.adamw.back(), ours.norm.back(), ours.update.back(), ours.update_reference.back(), torch.step.back(),
        torch.ns.back(), torch.adamw.back());
    std::fflush(stdout);
  }
  std::remove(shapes.c_str());
  const double ts = median(torch.step), tns = median(torch.ns), tad = median(torch.adamw);
  const double oad = median(ours.adamw), onorm = median(ours.norm);
  std::printf("\nmedians of %d rounds x %d steps, %d thread(s), NS %s:\n", rounds, steps, threads, ns_dtype.c_str());
  std::printf("| part | torch ms |");
  for (const auto& v : variants) std::printf(" orthotron, %s ms | torch / it |", v.name.c_str());
  std::printf("\n|---|---|");
  for (size_t i = 0; i < variants.size(); ++i) std::printf("---|---|");
  std::printf("\n");
  auto row = [&](const char* part, double t, auto pick) {
    std::printf("| %s | %.1f |", part, t);
    for (const auto& v : variants) std::printf(" %.1f | %.2fx |", pick(v), t / pick(v));
    std::printf("\n");
  };
  row("whole step", ts, [](const Variant& v) { return median(v.figures.step); });
  row("Newton-Schulz, every Muon matrix", tns, [](const Variant& v) { return median(v.figures.ns); });
  std::printf("| AdamW step (alone) | %.1f | %.1f | %.2fx |\n", tad, oad, tad / oad);
  std::printf("| global gradient norm (ours, alone) | - | %.1f | - |\n", onorm);
  const double oup = median(ours.update), oupref = median(ours.update_reference);
  std::printf("| Muon updates, one matrix per thread (ours, alone) | - | %.1f | - |\n", oup);
  std::printf("Muon updates: fused pass %.1f ms, ATen reference %.1f ms: %.2fx\n", oup, oupref, oupref / oup);
  for (const auto& v : variants) {
    std::printf("step speedup over torch.optim.Muon + AdamW(fused), %s: %.2fx (goal 1.5x)\n", v.name.c_str(),
                ts / median(v.figures.step));
  }
  return 0;
}

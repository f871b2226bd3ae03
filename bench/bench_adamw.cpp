// bench_adamw.cpp: one AdamW step over the benchmark GPT's parameters (default 8 layers, hidden
// 512, GQA 8/4, SwiGLU 1536, vocab 8192: 33.6M parameters, every one through AdamW), measured side
// by side in one run, in alternating rounds:
//   - orthotron's fused kernel and its reference kernel (adamw.h), with the moments placed as the
//     optimizers place them (adamw_state_for), and the fused kernel once more with both moments at
//     the parameter's offset within a page (the placement separate large allocations get);
//   - the memory limit: a loop with AdamW's exact traffic (reads parameter, gradient and both
//     moments, writes parameter and both moments) and no arithmetic to speak of;
//   - torch.optim.AdamW(fused=True) and (foreach=True), in the cached Python, same shapes and threads.
// Prints the median of each round's median and the ratios the scale-and-speed issue asks for.
//   bench_adamw [--threads T] [--steps N] [--rounds R] [--python PATH]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <unistd.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../tests/support/gpt_fixture.h"
#include "bench_python.h"
#include "optim/adamw.h"

namespace {

using orthotron::AdamWKernel;
using orthotron::AdamWOptions;
using orthotron::AdamWState;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Slot {
  at::Tensor param, grad;
  AdamWState state;    // as the optimizers place it (adamw_state_for: staggered against the parameter)
  AdamWState aligned;  // both moments at the parameter's offset within a page, as separate large allocations land
};

std::vector<Slot> make_slots(const orthotron::testing::GptShape& s) {
  at::manual_seed(1);
  std::vector<Slot> out;
  for (const auto& [name, shape] : orthotron::testing::gpt_shapes(s)) {
    Slot slot;
    slot.param = at::randn(shape);
    slot.grad = at::randn(shape) * 0.01;
    slot.state = orthotron::adamw_state_for(slot.param);
    slot.aligned.exp_avg = orthotron::zeros_at_page_offset(slot.param, 0);
    slot.aligned.exp_avg_sq = orthotron::zeros_at_page_offset(slot.param, 0);
    out.push_back(std::move(slot));
  }
  return out;
}

// Median ms of `steps` calls of `body` after one warm-up call.
double time_ms(int steps, const std::function<void()>& body) {
  std::vector<double> ms;
  for (int i = -1; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    if (i >= 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(ms);
}

// AdamW's memory traffic without its arithmetic: reads p, g, m, v; writes p, m, v. Vectorized per
// instruction set as the fused kernel is, so the limit is the best this loop shape reaches.
__attribute__((target_clones("avx512f", "avx2", "default"))) void traffic_range(
    float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    const float gi = g[i];
    p[i] += gi;
    m[i] += gi;
    v[i] += gi;
  }
}

void memory_limit_pass(std::vector<Slot>& slots) {
  for (auto& s : slots) {
    float* p = s.param.data_ptr<float>();
    const float* g = s.grad.data_ptr<float>();
    float* m = s.state.exp_avg.data_ptr<float>();
    float* v = s.state.exp_avg_sq.data_ptr<float>();
    at::parallel_for(0, s.param.numel(), 32768, [&](int64_t b, int64_t e) { traffic_range(p, g, m, v, b, e); });
  }
}

double run_python(const std::string& python, const std::string& script, const std::string& shapes, int threads,
                  int steps, const std::string& impl) {
  const auto figures = orthotron::bench::run_python_figures(python + " " + script + " " + shapes + " --threads " +
                                                                std::to_string(threads) + " --steps " +
                                                                std::to_string(steps) + " --impl " + impl,
                                                            "median_ms", "bench_adamw");
  return figures.empty() ? -1 : figures.at("median_ms");
}

}  // namespace

int main(int argc, char** argv) {
  const orthotron::testing::GptShape s = orthotron::testing::benchmark_gpt_shape();
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int steps = 10, rounds = 3;
  std::string python = ORTHOTRON_PYTHON_DEFAULT;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : "0"); };
    if (a == "--threads") {
      threads = std::stoi(next());
    } else if (a == "--steps") {
      steps = std::stoi(next());
    } else if (a == "--rounds") {
      rounds = std::stoi(next());
    } else if (a == "--python") {
      python = next();
    } else {
      std::printf("usage: bench_adamw [--threads T] [--steps N] [--rounds R] [--python PATH]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  at::set_num_threads(threads);
  std::vector<Slot> slots = make_slots(s);
  int64_t numel = 0;
  const std::string shapes = "/tmp/orthotron_bench_adamw_shapes_" + std::to_string(::getpid()) + ".txt";
  {
    std::ofstream out(shapes);
    for (const auto& slot : slots) {
      numel += slot.param.numel();
      for (int64_t d : slot.param.sizes()) out << d << ' ';
      out << '\n';
    }
  }
  const std::string script = std::string(ORTHOTRON_SOURCE_DIR_DEFAULT) + "/bench/python/torch_adamw_step.py";
  AdamWOptions fused;
  fused.beta2 = 0.95;
  AdamWOptions reference = fused;
  reference.kernel = AdamWKernel::kReference;
  auto step_all = [&](const AdamWOptions& o, bool aligned = false) {
    for (auto& slot : slots) orthotron::adamw_step(slot.param, slot.grad, aligned ? slot.aligned : slot.state, o);
  };
  std::vector<double> r_fused, r_aligned, r_reference, r_limit, r_torch_fused, r_torch_foreach;
  for (int round = 0; round < rounds; ++round) {
    r_fused.push_back(time_ms(steps, [&] { step_all(fused); }));
    r_aligned.push_back(time_ms(steps, [&] { step_all(fused, /*aligned=*/true); }));
    r_reference.push_back(time_ms(steps, [&] { step_all(reference); }));
    r_limit.push_back(time_ms(steps, [&] { memory_limit_pass(slots); }));
    r_torch_fused.push_back(run_python(python, script, shapes, threads, steps, "fused"));
    r_torch_foreach.push_back(run_python(python, script, shapes, threads, steps, "foreach"));
    std::printf(
        "round %d: fused %.1f  fused, moments page-aligned %.1f  reference %.1f  limit %.1f  torch fused %.1f  torch "
        "foreach %.1f ms\n",
        round + 1, r_fused.back(), r_aligned.back(), r_reference.back(), r_limit.back(), r_torch_fused.back(),
        r_torch_foreach.back());
  }
  std::remove(shapes.c_str());
  const double f = median(r_fused), fa = median(r_aligned), ref = median(r_reference), lim = median(r_limit),
               tf = median(r_torch_fused), tfe = median(r_torch_foreach);
  const double gb = static_cast<double>(numel) * 28 / 1e9;  // bytes one step moves: 4 reads + 3 writes of fp32
  std::printf("bench_adamw: %lld parameters in %zu tensors, %d threads, %d steps x %d rounds (medians)\n",
              static_cast<long long>(numel), slots.size(), threads, steps, rounds);
  std::printf("  orthotron fused       %8.2f ms  %6.1f GB/s\n", f, gb / (f / 1e3));
  std::printf("  fused, moments at the parameter's page offset %8.2f ms  (%.2fx the staggered placement)\n", fa,
              fa / f);
  std::printf("  orthotron reference   %8.2f ms\n", ref);
  std::printf("  memory limit          %8.2f ms  %6.1f GB/s\n", lim, gb / (lim / 1e3));
  std::printf("  torch AdamW fused     %8.2f ms\n", tf);
  std::printf("  torch AdamW foreach   %8.2f ms\n", tfe);
  std::printf(
      "  ratios: torch fused / orthotron fused %.2fx (goal >= 1); orthotron fused / memory limit %.2f (goal <= "
      "1.5); reference / fused %.2fx\n",
      tf / f, f / lim, ref / f);
  return tf > 0 && tfe > 0 ? 0 : 1;
}

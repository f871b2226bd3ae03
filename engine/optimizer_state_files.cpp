// optimizer_state_files.cpp: per-rank optimizer state files and the agreement on their outcome.
#include "engine/optimizer_state_files.h"

#include <cstdio>

#include "base/errors.h"
#include "base/safetensors.h"

namespace orthotron {

namespace {

/// Runs `io` on this rank, then agrees with every rank of `comm` (when given) on the outcome: if
/// `io` threw an orthotron Error on any rank, every rank throws E, with this rank's own message
/// where it failed and `elsewhere` on the ranks that did not.
template <typename E, typename Fn>
void on_every_rank(Fn&& io, Communicator* comm, const std::string& elsewhere) {
  std::string error;
  try {
    io();
  } catch (const Error& e) {
    error = e.what();
  }
  bool failed = !error.empty();
  if (comm != nullptr) {
    at::Tensor flag = at::full({1}, failed ? 1 : 0, at::TensorOptions().dtype(at::kLong).device(comm->device()));
    comm->all_reduce(flag, ReduceOp::kMax);
    failed = flag.cpu().item<int64_t>() != 0;
  }
  if (failed) throw E(error.empty() ? elsewhere : error);
}

}  // namespace

std::string rank_state_path(const std::string& path, int rank, int world) {
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, ".rank%05d-of-%05d", rank, world);
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return path + suffix;
  return path.substr(0, dot) + suffix + path.substr(dot);
}

void write_state_file(const StateDict& sd, const std::string& path) {
  save_safetensors(path, sd.tensors, sd.metadata);
}

StateDict read_state_file(const std::string& path) {
  SafetensorsContent c = load_safetensors(path);
  return StateDict{std::move(c.tensors), std::move(c.metadata)};
}

void save_optimizer_state(const Optimizer& opt, const std::string& path, Communicator* comm) {
  const std::string file = comm ? rank_state_path(path, comm->rank(), comm->size()) : path;
  on_every_rank<FormatError>([&] { write_state_file(opt.state_dict(), file); }, comm,
                             "save_optimizer_state: another rank could not write its state file (see its message)");
}

LoadReport load_optimizer_state(Optimizer& opt, const std::string& path, Communicator* comm,
                                const LoadOptions& options) {
  const std::string file = comm ? rank_state_path(path, comm->rank(), comm->size()) : path;
  StateDict sd;
  on_every_rank<StateDictError>([&] { sd = read_state_file(file); }, comm,
                                "load_optimizer_state: another rank could not read its state file (see its message)");
  return opt.load_state_dict(sd, options);
}

}  // namespace orthotron

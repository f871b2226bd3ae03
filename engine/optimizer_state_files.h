// optimizer_state_files.h: the one place optimizer state meets the file system: per-rank file
// names, the atomic write protocol (base/atomic_file.h through the safetensors codec), and the
// collective agreement that every rank wrote or read its file. Optimizers only hand out and take
// back StateDicts. The checkpoint layer will build on this. Depends on optim/, parallel/, base/.
#pragma once

#include <string>

#include "optim/optimizer.h"
#include "optim/state_dict.h"
#include "parallel/communicator.h"

namespace orthotron {

/// "dir/state.safetensors" -> "dir/state.rank00001-of-00004.safetensors": one file per rank.
std::string rank_state_path(const std::string& path, int rank, int world);

/// Writes `sd` to `path` as safetensors, atomically (temporary name, fsync, rename, directory
/// fsync). Python opens it with safetensors.torch.load_file. FormatError naming the path.
void write_state_file(const StateDict& sd, const std::string& path);
/// Reads a file written by write_state_file; FormatError naming the file and what is wrong.
StateDict read_state_file(const std::string& path);

/// Saves `opt`'s state. Without `comm`: one file at `path`. With `comm` (collective; every rank of
/// it must call): each rank writes rank_state_path(path, rank, size), then the ranks agree on the
/// outcome, so a failure on any rank makes every rank throw FormatError (never a hang).
void save_optimizer_state(const Optimizer& opt, const std::string& path, Communicator* comm = nullptr);

/// Loads what save_optimizer_state wrote, with the same file naming; collective with `comm`. A
/// file that cannot be read on any rank makes every rank throw StateDictError before the
/// optimizer's own (collective) load_state_dict runs.
LoadReport load_optimizer_state(Optimizer& opt, const std::string& path, Communicator* comm = nullptr,
                                const LoadOptions& options = {});

}  // namespace orthotron

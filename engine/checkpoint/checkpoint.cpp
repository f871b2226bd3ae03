// checkpoint.cpp: the sharded save with its commit protocol, discovery, verification and load.
#include "engine/checkpoint/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/atomic_file.h"
#include "base/errors.h"
#include "base/safetensors.h"
#include "engine/checkpoint/checksum.h"
#include "engine/checkpoint/grid_comm.h"
#include "engine/checkpoint/reshard.h"

namespace orthotron {

using Json = nlohmann::json;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kModelPrefix = "model/";
constexpr const char* kMetaPrefix = "checkpoint.";
/// Prefix of an error that is no reason to skip a checkpoint (another world size, model or plan).
constexpr const char* kFatal = "fatal:";

/// "rank R: message; rank Q: message" over the non-empty errors ("" when there are none).
std::string join_errors(const std::vector<std::string>& errors) {
  std::string out;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    if (!out.empty()) out += "; ";
    out += "rank " + std::to_string(r) + ": " + errors[r];
  }
  return out;
}

std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint32_t tensor_crc32(const at::Tensor& t) {
  const at::Tensor c = t.cpu().contiguous();
  return crc32_update(0, c.data_ptr(), c.nbytes());
}

/// The manifest's record of a split registry: for every split parameter its row count and each
/// part's name, row count and the CRC-32 of its row indices (so another layout of the same part
/// sizes differs too). One body for the save and the load's comparison.
Json splits_record(const SplitRegistry& splits) {
  Json out = Json::object();
  for (const auto& [pname, split] : splits.all()) {
    Json parts = Json::array();
    for (const auto& part : split.parts) {
      parts.push_back(
          {{"name", part.name}, {"rows", part.rows.numel()}, {"rows_crc32", crc32_hex(tensor_crc32(part.rows))}});
    }
    out[pname] = {{"rows", split.rows}, {"parts", parts}};
  }
  return out;
}

/// "" when the saved split record equals the live registry's; else names the first parameter that
/// differs, with both descriptions.
std::string describe_split_mismatch(const Json& saved, const SplitRegistry& live) {
  const Json mine = splits_record(live);
  auto describe = [](const Json& rec) {
    if (rec.is_null()) return std::string("not split");
    std::string parts;
    for (const auto& p : rec.at("parts")) {
      parts += (parts.empty() ? "" : ", ") + p.at("name").get<std::string>() + " " + p.at("rows").dump() + " rows";
    }
    return "split into " + std::to_string(rec.at("parts").size()) + " parts (" + parts + ")";
  };
  std::vector<std::string> names;
  for (auto it = saved.begin(); it != saved.end(); ++it) names.push_back(it.key());
  for (auto it = mine.begin(); it != mine.end(); ++it) names.push_back(it.key());
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    const Json a = saved.contains(n) ? saved.at(n) : Json();
    const Json b = mine.contains(n) ? mine.at(n) : Json();
    if (a != b) {
      std::string why =
          "parameter '" + n + "' is " + describe(a) + " in the checkpoint, " + describe(b) + " in this job";
      if (describe(a) == describe(b)) why += " (same part sizes, other rows: another fused layout)";
      return why;
    }
  }
  return "";
}

/// This process's default CPU generator state, as hex (the manifest's per-rank RNG record).
std::string cpu_rng_state_hex() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  at::Tensor state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    state = gen.get_state();
  }
  static const char* digits = "0123456789abcdef";
  std::string out;
  const auto* p = state.data_ptr<uint8_t>();
  for (int64_t i = 0; i < state.numel(); ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

/// Restores the default CPU generator from cpu_rng_state_hex()'s text; FormatError naming `where`
/// when it is not one.
void set_cpu_rng_state_hex(const std::string& hex, const std::string& where) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const size_t expected = 2 * static_cast<size_t>(gen.get_state().numel());
  if (hex.size() != expected || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw FormatError(where + ": the RNG state must be " + std::to_string(expected) + " hex digits, got " +
                      std::to_string(hex.size()) + " characters");
  }
  at::Tensor state = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  auto* p = state.data_ptr<uint8_t>();
  auto nibble = [](char c) { return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
  for (size_t i = 0; i < hex.size() / 2; ++i)
    p[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError("'" + path + "' is missing or unreadable (an incomplete save?)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Json read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifest;
  try {
    return Json::parse(read_text(path));
  } catch (const Json::exception& e) {
    throw FormatError("'" + path + "' is not valid JSON: " + e.what());
  }
}

/// A manifest field; FormatError naming the manifest and the key when absent.
const Json& field(const Json& j, const std::string& key, const std::string& dir) {
  if (!j.is_object() || !j.contains(key)) throw FormatError("'" + dir + "/" + kManifest + "' has no '" + key + "'");
  return j.at(key);
}

struct VerifiedShard {
  CheckpointProgress progress;
  SafetensorsContent content;
  std::string plan_hash;    ///< the manifest's
  std::string split_error;  ///< "" or how the saved split registry differs from the job's
  std::string rng_state;    ///< this rank's saved CPU generator state (hex); same world size only
  /// Resharding (saved at another world size): the saved layout, the verified old shards this rank
  /// needs (old rank -> content), and the reason the checkpoint belongs to another model ("" if not).
  bool reshard = false;
  SavedLayout saved;
  GridPlan old_plan;  ///< the saved grid's plan for this job's parameters
  std::map<int, SafetensorsContent> sources;
  std::string model_error;
  double read_seconds = 0;  ///< reading and verifying the old shards
};

/// Verifies shard `rank` of the `world`-rank checkpoint `dir` whose manifest is `m` (present, its
/// size and CRC-32, its identity metadata, every tensor's CRC-32) and returns its content.
SafetensorsContent verify_shard_file(const std::string& dir, const Json& m, int rank, int world) {
  const Json& shards = field(m, "shards", dir);
  if (!shards.is_array() || static_cast<int>(shards.size()) != world) {
    throw FormatError("'" + dir + "/" + kManifest + "': 'shards' must list " + std::to_string(world) + " shards");
  }
  const Json& entry = shards.at(static_cast<size_t>(rank));
  SafetensorsContent content;
  const std::string file = entry.at("file").get<std::string>();
  if (file != shard_file_name(rank, world)) {
    throw FormatError("'" + dir + "/" + kManifest + "': shard " + std::to_string(rank) + " is '" + file +
                      "', expected '" + shard_file_name(rank, world) + "'");
  }
  const std::string path = dir + "/" + file;
  const FileChecksum sum = file_crc32(path);
  const auto bytes = entry.at("bytes").get<uint64_t>();
  if (sum.bytes != bytes) {
    throw FormatError("shard '" + path + "' has " + std::to_string(sum.bytes) + " bytes, the manifest says " +
                      std::to_string(bytes) + " (truncated or overwritten)");
  }
  const std::string want_crc = entry.at("crc32").get<std::string>();
  const Json& tensor_crcs = entry.at("tensors");
  if (crc32_hex(sum.crc32) != want_crc) {
    std::string which;
    try {
      const SafetensorsContent c = load_safetensors(path);
      for (const auto& [name, t] : c.tensors) {
        if (!tensor_crcs.contains(name) || tensor_crcs.at(name).get<std::string>() != crc32_hex(tensor_crc32(t))) {
          which = "; tensor '" + name + "' differs from its recorded CRC-32";
          break;
        }
      }
      if (which.empty()) which = "; every tensor matches, so the header or metadata is damaged";
    } catch (const Error& e) {
      which = "; it no longer parses: " + std::string(e.what());
    }
    throw FormatError("shard '" + path + "' has CRC-32 " + crc32_hex(sum.crc32) + ", the manifest says " + want_crc +
                      which);
  }
  content = load_safetensors(path);
  const auto& meta = content.metadata;
  auto meta_is = [&](const std::string& key, const std::string& want) {
    auto it = meta.find(kMetaPrefix + key);
    const std::string got = it == meta.end() ? "(absent)" : it->second;
    if (got != want) {
      throw FormatError("shard '" + path + "' metadata " + kMetaPrefix + key + " is " + got + ", the manifest says " +
                        want + " (a shard of another save)");
    }
  };
  meta_is("save_id", field(m, "save_id", dir).get<std::string>());
  meta_is("iteration", std::to_string(field(m, "iteration", dir).get<int64_t>()));
  meta_is("rank", std::to_string(rank));
  if (content.tensors.size() != tensor_crcs.size()) {
    throw FormatError("shard '" + path + "' holds " + std::to_string(content.tensors.size()) +
                      " tensors, the manifest lists " + std::to_string(tensor_crcs.size()));
  }
  for (const auto& [name, t] : content.tensors) {
    if (!tensor_crcs.contains(name) || tensor_crcs.at(name).get<std::string>() != crc32_hex(tensor_crc32(t))) {
      throw FormatError("shard '" + path + "': tensor '" + name + "' does not match the manifest's CRC-32");
    }
  }
  return content;
}

/// "TP 2 x DP 2" (or "data-parallel size 4" without tensor parallelism): a grid, for messages.
std::string grid_name(int tp, int world) {
  if (tp == 1) return "data-parallel size " + std::to_string(world);
  return "tensor-parallel size " + std::to_string(tp) + " x data-parallel size " + std::to_string(world / tp);
}

/// Verifies what grid rank `rank` of a `world`-rank job at tensor-parallel size `tp` reads from
/// checkpoint `dir`: its own shard on the same grid; on another grid (only with `plan`, the job's
/// grid plan) the saved layout record against the plan, then every old shard it needs. Model
/// mismatches are recorded in model_error (load_verified reports them); damage throws FormatError;
/// another grid without a plan throws a fatal ConfigError.
VerifiedShard verify_shard(const std::string& dir, int rank, int world, int tp, const GridPlan* plan,
                           const SplitRegistry* splits) {
  const Json m = read_manifest(dir);
  try {
    const int version = field(m, "format_version", dir).get<int>();
    if (version != kCheckpointFormatVersion && version != kOwnerAlignedSinceVersion) {
      throw FormatError("'" + dir + "/" + kManifest + "': format_version " + field(m, "format_version", dir).dump() +
                        ", this build reads " + std::to_string(kCheckpointFormatVersion) + " (and " +
                        std::to_string(kOwnerAlignedSinceVersion) + " for layout owner_aligned)");
    }
    const int saved_world = field(m, "world_size", dir).get<int>();
    const int saved_tp = m.contains("tensor_parallel") ? m.at("tensor_parallel").get<int>() : 1;
    if (saved_tp < 1 || saved_world % saved_tp != 0) {
      throw FormatError("'" + dir + "/" + kManifest + "': tensor_parallel " + std::to_string(saved_tp) +
                        " does not divide world_size " + std::to_string(saved_world));
    }
    // Another shard layout is another grid too: the shards hold other ranges (reshard.h).
    // (a manifest without a layout record is refused later, where a reshard needs it)
    const Json saved_record = m.contains("layout") ? m.at("layout") : Json::object();
    const std::string saved_layout = saved_record.value("shard_layout", std::string("owner_aligned"));
    if (version != kCheckpointFormatVersion && saved_layout != "owner_aligned") {
      throw FormatError("'" + dir + "/" + kManifest + "': format_version " + std::to_string(version) +
                        " with shard layout " + saved_layout + ", whose cut this build no longer computes (it reads " +
                        saved_layout + " from format_version " + std::to_string(kCheckpointFormatVersion) + ")");
    }
    // Layout B's cut follows its buckets: another bucket size is another grid as well.
    const int64_t saved_buckets = saved_record.value("bucket_elements", int64_t{0});
    const std::string job_layout = plan == nullptr ? "owner_aligned" : to_string(plan->dp.layout);
    const int64_t job_buckets = plan == nullptr ? 0 : plan->dp.bucket_elements;
    const bool same_grid =
        saved_world == world && saved_tp == tp && saved_layout == job_layout && saved_buckets == job_buckets;
    VerifiedShard out;
    if (!same_grid && plan == nullptr) {
      const std::string cut = saved_layout == "owner_aligned"
                                  ? std::string()
                                  : " under shard layout " + saved_layout + " in buckets of " +
                                        std::to_string(saved_buckets) + " elements (0: one bucket)";
      throw ConfigError(std::string(kFatal) + " checkpoint '" + dir + "' was saved at " +
                        grid_name(saved_tp, saved_world) + cut + ", this job runs " + std::to_string(world) +
                        " rank(s) under owner_aligned (verify_checkpoint_shard checks the same grid only; "
                        "load_checkpoint reshards)");
    }
    if (splits != nullptr) out.split_error = describe_split_mismatch(field(m, "splits", dir), *splits);
    if (!same_grid) {
      const auto start = std::chrono::steady_clock::now();
      const std::string where = dir + "/" + kManifest;
      out.reshard = true;
      out.saved = parse_saved_layout(field(m, "layout", dir), where);
      if (out.saved.world * out.saved.tp != saved_world || out.saved.tp != saved_tp) {
        throw FormatError("'" + where + "': layout record grid " + std::to_string(out.saved.tp) + " x " +
                          std::to_string(out.saved.world) + ", the manifest says world_size " +
                          std::to_string(saved_world) + " with tensor_parallel " + std::to_string(saved_tp));
      }
      const std::string saved_hash = field(m, "plan_hash", dir).get<std::string>();
      if (!field(m, "shards", dir).is_array() || static_cast<int>(m.at("shards").size()) != saved_world) {
        throw FormatError("'" + where + "': 'shards' must list " + std::to_string(saved_world) + " shards");
      }
      std::map<int, SafetensorsContent> shapes_read;  // old shards read only to name a mismatching shape
      out.model_error =
          describe_plan_mismatch(out.saved, saved_hash, *plan, *splits, [&](const std::string& name, int r) {
            if (!shapes_read.count(r)) shapes_read[r] = verify_shard_file(dir, m, r, saved_world);
            auto it = shapes_read[r].tensors.find(kModelPrefix + name);
            if (it == shapes_read[r].tensors.end()) {
              throw FormatError("shard " + std::to_string(r) + " of '" + dir + "' has no tensor '" + kModelPrefix +
                                name + "'");
            }
            return it->second.sizes().vec();
          });
      if (out.model_error.empty()) {
        // Same plan: the saved record must be the one the plan recomputed at the old size writes.
        out.old_plan = saved_grid_plan(out.saved, *plan, *splits);
        const SavedLayout expect = layout_of(out.old_plan);
        if (out.saved.owners != expect.owners || out.saved.adamw_ranges != expect.adamw_ranges ||
            out.saved.shard_len != expect.shard_len || out.saved.plan_hash != expect.plan_hash ||
            out.saved.cuts != expect.cuts || out.saved.tp_owners != expect.tp_owners) {
          throw FormatError("'" + where + "': the layout record disagrees with the owner plan it names (damaged)");
        }
        for (int r : reshard_sources(out.saved, out.old_plan, *plan, rank / tp))
          out.sources[r] = verify_shard_file(dir, m, r, saved_world);
      }
      out.read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } else {
      const Json& shards = field(m, "shards", dir);
      if (!shards.is_array() || static_cast<int>(shards.size()) != world) {
        throw FormatError("'" + dir + "/" + kManifest + "': 'shards' must list " + std::to_string(world) + " shards");
      }
      out.content = verify_shard_file(dir, m, rank, world);
      const Json& rng = field(m, "rng", dir);
      if (!rng.is_object() || !rng.contains("ranks") || !rng.at("ranks").is_array() ||
          static_cast<int>(rng.at("ranks").size()) != world) {
        throw FormatError("'" + dir + "/" + kManifest + "': 'rng' must hold 'ranks', one state per rank");
      }
      out.rng_state = rng.at("ranks").at(static_cast<size_t>(rank)).get<std::string>();
    }
    out.progress.iteration = field(m, "iteration", dir).get<int64_t>();
    out.progress.consumed_samples = field(m, "consumed_samples", dir).get<int64_t>();
    out.progress.skipped = field(m, "skipped_iterations", dir).get<int64_t>();
    out.progress.nan = field(m, "nan_iterations", dir).get<int64_t>();
    out.progress.lr_schedule = field(m, "lr_schedule", dir).dump();
    out.plan_hash = field(m, "plan_hash", dir).get<std::string>();
    return out;
  } catch (const Json::exception& e) {
    throw FormatError("'" + dir + "/" + kManifest + "' is malformed: " + e.what());
  }
}

/// Collective verification: every rank checks its shard; the outcome is agreed. Returns "" when
/// every rank verified, else the joined reasons; `fatal` when a reason is no ground to skip.
std::string verify_everywhere(const std::string& dir, GridComm& comm, const GridPlan& plan, const SplitRegistry& splits,
                              VerifiedShard& out, bool& fatal) {
  std::string error;
  try {
    out = verify_shard(dir, comm.rank(), comm.size(), comm.tp_size(), &plan, &splits);
  } catch (const std::exception& e) {
    error = e.what();  // verify_shard marks the reasons that are no ground to skip with kFatal
  }
  const std::vector<std::string> errors = comm.all_gather_strings(error);
  fatal = false;
  for (const auto& e : errors) fatal = fatal || e.rfind(kFatal, 0) == 0;
  return join_errors(errors);
}

/// After the model check: a checkpoint of the same model with another split registry is refused,
/// naming the parameter. Every rank read the same manifest, so all agree without communicating.
void refuse_other_splits(const VerifiedShard& v) {
  if (!v.split_error.empty()) throw StateDictError("checkpoint saved with another split registry: " + v.split_error);
}

/// The load of a checkpoint saved on another grid: every rank assembles its new shard from the old
/// shards it verified, then loads it through the same two calls as the same-grid path.
void load_resharded(VerifiedShard& v, DistributedMuonWithAdamW& opt) {
  GridComm comm(opt);
  const std::string mismatch = join_errors(comm.all_gather_strings(v.model_error));
  if (!mismatch.empty()) {
    const bool dp_only = v.saved.tp == 1 && comm.tp_size() == 1;
    throw StateDictError("checkpoint of another model (saved at " + grid_name(v.saved.tp, v.saved.world * v.saved.tp) +
                         ", this job runs " +
                         (dp_only ? std::to_string(comm.size()) : grid_name(comm.tp_size(), comm.size())) +
                         "): " + mismatch);
  }
  refuse_other_splits(v);
  ReshardedShard shard;
  std::string error;
  try {
    shard = assemble_reshard(v.saved, v.old_plan, v.sources, opt.grid_plan(), comm.dp_rank());
  } catch (const std::exception& e) {
    error = e.what();
  }
  const std::string failure = join_errors(comm.all_gather_strings(error));
  if (!failure.empty()) throw FormatError("resharding the checkpoint failed: " + failure);
  v.sources.clear();
  opt.load_parameter_shard(shard.model);
  v.progress.state_load = opt.load_state_dict(shard.state);
  if (!parameters_equal_across_ranks(opt)) {
    throw InvariantError("after the resharded checkpoint load the parameters differ across data-parallel ranks");
  }
}

void load_verified(VerifiedShard& v, DistributedMuonWithAdamW& opt) {
  if (v.reshard) {
    load_resharded(v, opt);
    v.progress.rng_restored = false;
    return;
  }
  std::map<std::string, at::Tensor> model;
  StateDict sd;
  const std::string prefix = kModelPrefix;
  for (auto& [name, t] : v.content.tensors) {
    if (name.rfind(prefix, 0) == 0) {
      model[name.substr(prefix.size())] = t;
    } else {
      sd.tensors[name] = t;
    }
  }
  for (const auto& [key, value] : v.content.metadata) {
    if (key.rfind(kMetaPrefix, 0) != 0 && key != "format") sd.metadata[key] = value;
  }
  // Another model: every rank names what it holds that does not match, and every rank hears it all.
  // A shape that differs names another model at once; a parameter missing from this rank's shard
  // may instead have another owner under another split registry, which is named first.
  std::string error, missing;
  size_t expected_count = 0;
  for (const auto& seg : opt.holdings()) {
    const NamedParameter& p = opt.parameters()[seg.param];
    const std::vector<int64_t> want =
        opt.plan().owner[seg.param] >= 0 ? p.tensor.sizes().vec() : std::vector<int64_t>{seg.count};
    ++expected_count;
    auto it = model.find(p.name);
    if (it == model.end()) {
      if (missing.empty()) missing = "parameter '" + p.name + "' is not in the checkpoint";
    } else if (it->second.sizes().vec() != want) {  // a dtype is load_parameter_shard's (lossless or refused)
      error = "parameter '" + p.name + "' has shape " + c10::str(it->second.sizes()) + " " +
              c10::toString(it->second.scalar_type()) + " in the checkpoint, this model's is " +
              c10::str(at::IntArrayRef(want)) + " " + c10::toString(p.tensor.scalar_type());
      break;
    }
  }
  if (missing.empty() && model.size() != expected_count) {
    missing = "the checkpoint's shard holds " + std::to_string(model.size()) + " parameters, this rank holds " +
              std::to_string(expected_count) + " (another model?)";
  }
  GridComm comm(opt);
  const std::string failure = join_errors(comm.all_gather_strings(error));
  if (!failure.empty()) throw StateDictError("checkpoint of another model: " + failure);
  refuse_other_splits(v);
  const std::string absent = join_errors(comm.all_gather_strings(missing));
  if (!absent.empty()) throw StateDictError("checkpoint of another model: " + absent);
  if (v.plan_hash != hex64(opt.grid_plan().hash)) {
    throw StateDictError("checkpoint saved with owner plan " + v.plan_hash + ", this job's plan is " +
                         hex64(opt.grid_plan().hash) + " (routing or splits differ)");
  }
  opt.load_parameter_shard(model);
  v.progress.state_load = opt.load_state_dict(sd);
  if (!parameters_equal_across_ranks(opt)) {
    throw InvariantError("after the checkpoint load the parameters differ across data-parallel ranks");
  }
  set_cpu_rng_state_hex(v.rng_state, "checkpoint manifest, rank " + std::to_string(comm.rank()));
  v.progress.rng_restored = true;
}

// POSIX file-system helpers: std::filesystem is avoided here because LibTorch's shared library
// exports its own (ABI-incompatible) copies of some std::filesystem symbols.

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path);
}

/// Removes `path` recursively, ignoring errors (a cleanup path).
void remove_quietly(const std::string& path) {
  ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw FormatError("cannot rename '" + from + "' to '" + to + "': " + std::strerror(errno));
  }
}

/// The names in a directory (no . and ..); empty when it cannot be read.
std::vector<std::string> directory_names(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::string checkpoint_name(int64_t iteration) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "iter_%07lld", static_cast<long long>(iteration));
  return buf;
}

std::string shard_file_name(int rank, int world) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank%05d-of-%05d.safetensors", rank, world);
  return buf;
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  for (const auto& name : directory_names(root)) {
    if (name.size() != 12 || name.rfind("iter_", 0) != 0) continue;
    if (name.find_first_not_of("0123456789", 5) != std::string::npos) continue;
    if (!is_directory(root + "/" + name)) continue;
    found.emplace_back(std::stoll(name.substr(5)), root + "/" + name);
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

/// One save: identity, paths, this rank's host copies, and the outcome of its shard write.
struct SaveJob {
  std::chrono::steady_clock::time_point start;
  int rank = 0, world = 1, tp = 1;  ///< grid rank, grid size, tensor-parallel size
  std::string save_id, root, name, final_dir, tmp_dir, file;
  CheckpointProgress progress;
  std::string config_yaml;
  int64_t keep_last = 0;
  std::map<std::string, at::Tensor> tensors;  ///< host copies, released after the write
  std::map<std::string, std::string> meta;
  std::string layout, splits, plan_hash;  ///< JSON text for the manifest
  std::vector<std::string> rng;           ///< every rank's CPU generator state (hex), in rank order
  std::string info;                       ///< the shard record (JSON text) once written
  std::string error;                      ///< what failed on this rank ("" when nothing did)
  uint64_t bytes = 0;
};

namespace {

/// Collective over the grid: the identity, paths and host copies of one save (the only part of an
/// async save that blocks training). `clone` forces a host copy even of tensors already on the host.
std::unique_ptr<SaveJob> prepare_save(const std::string& root, const CheckpointProgress& progress,
                                      const DistributedMuonWithAdamW& opt, const std::string& config_yaml,
                                      int64_t keep_last, bool clone) {
  auto job = std::make_unique<SaveJob>();
  job->start = std::chrono::steady_clock::now();
  GridComm comm(opt);
  job->rank = comm.rank();
  job->world = comm.size();
  job->tp = comm.tp_size();
  // One identity per save: a random id from rank 0.
  at::Tensor id = at::zeros({1}, comm.long_options());
  if (job->rank == 0) {
    std::random_device rd;
    const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    id.fill_(static_cast<int64_t>(v >> 1));
  }
  comm.broadcast_from_first(id);
  job->rng = comm.all_gather_strings(cpu_rng_state_hex());
  job->save_id = hex64(static_cast<uint64_t>(id.cpu().item<int64_t>()));
  job->root = root;
  job->name = checkpoint_name(progress.iteration);
  job->final_dir = root + "/" + job->name;
  job->tmp_dir = job->final_dir + ".tmp." + job->save_id;
  job->file = shard_file_name(job->rank, job->world);
  job->progress = progress;
  job->config_yaml = config_yaml;
  job->keep_last = keep_last;
  auto host = [clone](const at::Tensor& t) {
    at::Tensor c = t.cpu().contiguous();
    return clone && c.data_ptr() == t.data_ptr() ? c.clone() : c;
  };
  try {
    for (auto& [pname, t] : opt.parameter_shard()) job->tensors[kModelPrefix + pname] = host(t);
    StateDict sd = opt.state_dict();
    for (auto& [key, t] : sd.tensors) job->tensors[key] = host(t);
    job->meta = sd.metadata;
    const std::string m = kMetaPrefix;
    job->meta[m + "format_version"] = std::to_string(kCheckpointFormatVersion);
    job->meta[m + "save_id"] = job->save_id;
    job->meta[m + "iteration"] = std::to_string(progress.iteration);
    job->meta[m + "rank"] = std::to_string(job->rank);
    job->meta[m + "world_size"] = std::to_string(job->world);
    Json ranges = Json::object();
    for (const auto& s : opt.holdings()) {
      const auto& p = opt.plan().params[s.param];
      ranges[p.name] = {
          {"begin", s.param_begin}, {"end", s.param_begin + s.count}, {"whole", opt.plan().owner[s.param] >= 0}};
    }
    job->meta[m + "model_ranges"] = ranges.dump();
    job->layout = layout_record(opt.grid_plan()).dump();  // nothing rank-specific in the shared record
    job->splits = splits_record(opt.splits()).dump();
    job->plan_hash = hex64(opt.grid_plan().hash);
  } catch (const std::exception& e) {
    job->error = e.what();
  }
  return job;
}

/// Local, no communication (runs on the background thread of an async save): serializes and fsyncs
/// this rank's shard into the temporary directory; records the shard entry or the error in `job`.
void write_shard(SaveJob& job) {
  if (!job.error.empty()) return;
  try {
    if (const char* slow = std::getenv("ORTHOTRON_FAULT_SLOW_SAVE_MS")) {  // test hook: widen the write window
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(slow)));
    }
    make_directories(job.tmp_dir);
    Json crcs = Json::object();
    for (const auto& [key, t] : job.tensors) crcs[key] = crc32_hex(tensor_crc32(t));
    const std::string path = job.tmp_dir + "/" + job.file;
    save_safetensors(path, job.tensors, job.meta);  // temporary name, fsync, rename, directory fsync
    const FileChecksum sum = file_crc32(path);
    job.bytes = sum.bytes;
    job.info = Json{
        {"rank", job.rank},
        {"file", job.file},
        {"bytes", sum.bytes},
        {"crc32", crc32_hex(sum.crc32)},
        {"tensors",
         crcs}}.dump();
  } catch (const std::exception& e) {
    job.error = e.what();
  }
  job.tensors.clear();  // the host copies are no longer needed
}

/// Collective: the barrier with every rank's outcome, then rank 0's commit (manifest, rename,
/// directory fsync, latest tracker, retention); FormatError on every rank when anything failed.
SaveResult commit_save(SaveJob& job, GridComm& comm) {
  const int rank = job.rank;
  SaveResult result;
  result.bytes = job.bytes;
  // 2. Barrier with the outcome: every rank's shard record (or error) reaches every rank.
  const std::vector<std::string> errors = comm.all_gather_strings(job.error);
  const std::vector<std::string> infos = comm.all_gather_strings(job.error.empty() ? job.info : std::string());
  std::string failure = join_errors(errors);
  const std::string& root = job.root;
  const std::string& final_dir = job.final_dir;
  const std::string& tmp_dir = job.tmp_dir;
  const std::string& name = job.name;
  const CheckpointProgress& progress = job.progress;
  // 3. Rank 0 commits: manifest, rename, directory fsync, latest tracker, retention.
  std::string commit_error;
  if (failure.empty() && rank == 0) {
    std::string aside;
    try {
      Json shards = Json::array();
      for (const auto& s : infos) shards.push_back(Json::parse(s));
      Json lr = Json::parse(progress.lr_schedule.empty() ? "null" : progress.lr_schedule);
      const Json manifest = {{"format", "orthotron.checkpoint"},
                             {"format_version", kCheckpointFormatVersion},
                             {"save_id", job.save_id},
                             {"iteration", progress.iteration},
                             {"consumed_samples", progress.consumed_samples},
                             {"skipped_iterations", progress.skipped},
                             {"nan_iterations", progress.nan},
                             {"lr_schedule", lr},
                             {"world_size", job.world},
                             {"tensor_parallel", job.tp},
                             {"plan_hash", job.plan_hash},
                             {"layout", Json::parse(job.layout)},
                             {"splits", Json::parse(job.splits)},
                             {"rng", {{"generator", "torch default CPU generator"}, {"ranks", job.rng}}},
                             {"shards", shards},
                             {"config", job.config_yaml}};
      write_file_atomically(tmp_dir + "/" + kManifest, manifest.dump(1) + "\n");
      if (exists(final_dir)) {
        aside = final_dir + ".replaced." + job.save_id;
        rename_or_throw(final_dir, aside);
      }
      try {
        rename_or_throw(tmp_dir, final_dir);
      } catch (...) {
        if (!aside.empty()) ::rename(aside.c_str(), final_dir.c_str());
        aside.clear();
        throw;
      }
      fsync_directory(root);
      if (!aside.empty()) remove_quietly(aside);
      write_file_atomically(root + "/latest", name + "\n");
      // Retention: the newest keep_last committed checkpoints stay, and never the one just written goes.
      if (job.keep_last > 0) {
        const auto all = list_checkpoints(root);
        for (size_t i = static_cast<size_t>(job.keep_last); i < all.size(); ++i) {
          if (base_name(all[i]) == name) continue;
          remove_quietly(all[i]);
          ++result.removed;
        }
      }
      // Leftovers of earlier saves that never committed.
      for (const auto& n : directory_names(root)) {
        if (n.rfind("iter_", 0) == 0 &&
            (n.find(".tmp.") != std::string::npos || n.find(".replaced.") != std::string::npos))
          remove_quietly(root + "/" + n);
      }
    } catch (const std::exception& e) {
      commit_error = std::string("commit of '") + final_dir + "' failed: " + e.what();
      remove_quietly(tmp_dir);
    }
  }
  if (!failure.empty() && rank == 0) remove_quietly(tmp_dir);
  if (failure.empty()) failure = join_errors(comm.all_gather_strings(commit_error));
  if (!failure.empty()) {
    throw FormatError("save_checkpoint of iteration " + std::to_string(progress.iteration) + " under '" + root +
                      "': " + failure + " (earlier checkpoints are untouched)");
  }
  result.path = final_dir;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - job.start).count();
  result.blocked_seconds = result.seconds;
  return result;
}

}  // namespace

SaveResult save_checkpoint(const std::string& root, const CheckpointProgress& progress,
                           const DistributedMuonWithAdamW& opt, const std::string& config_yaml, int64_t keep_last) {
  std::unique_ptr<SaveJob> job = prepare_save(root, progress, opt, config_yaml, keep_last, false);
  write_shard(*job);
  GridComm comm(opt);
  return commit_save(*job, comm);
}

AsyncSave::AsyncSave(const std::string& root, const CheckpointProgress& progress, const DistributedMuonWithAdamW& opt,
                     const std::string& config_yaml, int64_t keep_last)
    : comm_(opt), job_(prepare_save(root, progress, opt, config_yaml, keep_last, true)) {
  blocked_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - job_->start).count();
  SaveJob* job = job_.get();
  std::atomic<bool>* done = &done_;
  writer_ = std::thread([job, done] {
    write_shard(*job);
    done->store(true);
  });
}

AsyncSave::~AsyncSave() {
  if (writer_.joinable()) writer_.join();
}

int64_t AsyncSave::iteration() const {
  return job_->progress.iteration;
}

bool AsyncSave::ready() {
  at::Tensor pending = at::full({1}, done_.load() ? 0 : 1, comm_.long_options());
  comm_.all_reduce_max(pending);
  return pending.cpu().item<int64_t>() == 0;
}

SaveResult AsyncSave::finish() {
  if (writer_.joinable()) writer_.join();
  SaveResult r = commit_save(*job_, comm_);
  r.blocked_seconds = blocked_seconds_;
  return r;
}

CheckpointProgress verify_checkpoint_shard(const std::string& path, int rank, int world) {
  return verify_shard(path, rank, world, 1, nullptr, nullptr).progress;
}

CheckpointProgress load_checkpoint(const std::string& path, DistributedMuonWithAdamW& opt) {
  VerifiedShard v;
  bool fatal = false;
  GridComm comm(opt);
  const std::string failure = verify_everywhere(path, comm, opt.grid_plan(), opt.splits(), v, fatal);
  if (!failure.empty()) {
    if (fatal) throw ConfigError("checkpoint '" + path + "': " + failure);
    throw FormatError("checkpoint '" + path + "' is incomplete or damaged: " + failure);
  }
  load_verified(v, opt);
  return v.progress;
}

bool load_latest_checkpoint(const std::string& root, DistributedMuonWithAdamW& opt, CheckpointProgress& progress,
                            std::string& loaded_path, std::vector<std::string>& warnings) {
  GridComm comm(opt);
  // Rank 0's view of the directory decides the candidates, so every rank walks the same list.
  std::vector<int64_t> iterations;
  if (comm.rank() == 0) {
    for (const auto& p : list_checkpoints(root)) iterations.push_back(std::stoll(base_name(p).substr(5)));
  }
  at::Tensor count = at::full({1}, static_cast<int64_t>(iterations.size()), comm.long_options());
  comm.broadcast_from_first(count);
  const int64_t n = count.cpu().item<int64_t>();
  if (n == 0) return false;
  at::Tensor list = at::zeros({n}, at::kLong);
  for (int64_t i = 0; i < static_cast<int64_t>(iterations.size()); ++i) list[i] = iterations[static_cast<size_t>(i)];
  at::Tensor list_dev = list.to(comm.long_options().device());
  comm.broadcast_from_first(list_dev);
  list = list_dev.cpu();
  for (int64_t i = 0; i < n; ++i) {
    const std::string path = root + "/" + checkpoint_name(list[i].item<int64_t>());
    VerifiedShard v;
    bool fatal = false;
    const std::string failure = verify_everywhere(path, comm, opt.grid_plan(), opt.splits(), v, fatal);
    if (fatal) throw ConfigError("checkpoint '" + path + "': " + failure);
    if (!failure.empty()) {
      warnings.push_back("skipping checkpoint '" + path + "': " + failure);
      continue;
    }
    load_verified(v, opt);
    progress = v.progress;
    loaded_path = path;
    return true;
  }
  return false;
}

bool parameters_equal_across_ranks(const DistributedMuonWithAdamW& opt) {
  uint32_t crc = 0;
  for (const auto& p : opt.parameters()) {
    const at::Tensor c = p.tensor.detach().cpu().contiguous();
    crc = crc32_update(crc, c.data_ptr(), c.nbytes());
  }
  Communicator& comm = opt.comm();
  // max(crc) and max(-crc) = -min(crc) in one all_reduce over the data-parallel group (TP pieces differ).
  at::Tensor both = at::tensor({static_cast<int64_t>(crc), -static_cast<int64_t>(crc)}, at::kLong).to(comm.device());
  comm.all_reduce(both, ReduceOp::kMax);
  const at::Tensor b = both.cpu();
  at::Tensor unequal =
      at::full({1}, b[0].item<int64_t>() == -b[1].item<int64_t>() ? 0 : 1, at::kLong).to(comm.device());
  if (opt.tp_comm() != nullptr) opt.tp_comm()->all_reduce(unequal, ReduceOp::kMax);  // every TP rank agrees
  return unequal.cpu().item<int64_t>() == 0;
}

}  // namespace orthotron

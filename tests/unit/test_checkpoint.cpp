// test_checkpoint.cpp: the local pieces of engine/checkpoint/: CRC-32, names, the discovery of
// committed checkpoints (temporary and replaced directories ignored), and the per-rank
// verification of a hand-built checkpoint (a flipped byte names the tensor, a truncated shard, a
// shard of another save, a missing manifest, another world size). The collective save/load and
// exact resume run through the real binary in tests/e2e/checkpoint_e2e.sh.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "base/errors.h"
#include "base/safetensors.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/checksum.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;
using orthotron::testing::unique_temp_path;

std::string make_dir(const std::string& path) {
  ::mkdir(path.c_str(), 0755);
  return path;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Checkpoint, Crc32MatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32_update(0, "123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32_update(crc32_update(0, "1234", 4), "56789", 5), 0xCBF43926u) << "incremental";
  EXPECT_EQ(crc32_hex(0xCBF43926u), "0xcbf43926");
  const std::string path = unique_temp_path("crc.bin");
  write_text(path, "123456789");
  const FileChecksum sum = file_crc32(path);
  EXPECT_EQ(sum.bytes, 9u);
  EXPECT_EQ(sum.crc32, 0xCBF43926u);
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { file_crc32(path + ".absent"); }), ".absent"));
}

TEST(Checkpoint, NamesAreFixedWidth) {
  EXPECT_EQ(checkpoint_name(40), "iter_0000040");
  EXPECT_EQ(shard_file_name(1, 4), "rank00001-of-00004.safetensors");
}

TEST(Checkpoint, ListingFindsCommittedDirectoriesNewestFirst) {
  const std::string root = make_dir(unique_temp_path("root"));
  for (const char* d : {"iter_0000004", "iter_0000012", "iter_0000008", "iter_0000016.tmp.00ab",
                        "iter_0000020.replaced.1", "iter_00000x1", "other"}) {
    make_dir(root + "/" + d);
  }
  write_text(root + "/iter_0000024", "a file, not a directory");
  const auto found = list_checkpoints(root);
  ASSERT_EQ(found.size(), 3u);
  EXPECT_EQ(found[0], root + "/iter_0000012");
  EXPECT_EQ(found[1], root + "/iter_0000008");
  EXPECT_EQ(found[2], root + "/iter_0000004");
  EXPECT_TRUE(list_checkpoints(root + "/absent").empty());
}

/// A one-rank checkpoint written the way save_checkpoint writes it (shard + manifest).
struct HandBuilt {
  std::string dir;
  std::string shard;
  explicit HandBuilt(const std::string& tag, const std::string& shard_save_id = "00000000000000aa") {
    dir = make_dir(unique_temp_path(tag));
    shard = dir + "/" + shard_file_name(0, 1);
    std::map<std::string, at::Tensor> tensors = {{"model/w", at::arange(64, at::kFloat).reshape({8, 8})},
                                                 {"muon/w/momentum", at::full({8, 8}, 0.5f)}};
    save_safetensors(shard, tensors,
                     {{"checkpoint.save_id", shard_save_id}, {"checkpoint.iteration", "4"}, {"checkpoint.rank", "0"}});
    nlohmann::json crcs = nlohmann::json::object();
    for (const auto& [k, t] : tensors) crcs[k] = crc32_hex(crc32_update(0, t.data_ptr(), t.nbytes()));
    const FileChecksum sum = file_crc32(shard);
    const nlohmann::json m = {{"format_version", kCheckpointFormatVersion},
                              {"save_id", "00000000000000aa"},
                              {"iteration", 4},
                              {"consumed_samples", 32},
                              {"skipped_iterations", 1},
                              {"nan_iterations", 1},
                              {"lr_schedule", {{"factor", 1.0}}},
                              {"world_size", 1},
                              {"plan_hash", "0000000000000001"},
                              {"rng", {{"ranks", {"00"}}}},
                              {"shards",
                               {{{"rank", 0},
                                 {"file", shard_file_name(0, 1)},
                                 {"bytes", sum.bytes},
                                 {"crc32", crc32_hex(sum.crc32)},
                                 {"tensors", crcs}}}}};
    write_text(dir + "/manifest.json", m.dump());
  }
};

TEST(Checkpoint, AnIntactShardVerifiesAndReportsItsProgress) {
  HandBuilt c("ok");
  const CheckpointProgress p = verify_checkpoint_shard(c.dir, 0, 1);
  EXPECT_EQ(p.iteration, 4);
  EXPECT_EQ(p.consumed_samples, 32);
  EXPECT_EQ(p.skipped, 1);
}

TEST(Checkpoint, AFlippedByteIsNamedDownToTheTensor) {
  HandBuilt c("flip");
  std::string bytes = read_bytes(c.shard);
  bytes[bytes.size() - 3] = static_cast<char>(bytes[bytes.size() - 3] ^ 0x40);  // the last tensor's data
  write_text(c.shard, bytes);
  const std::string msg = thrown_message<FormatError>([&] { verify_checkpoint_shard(c.dir, 0, 1); });
  EXPECT_TRUE(contains(msg, c.shard)) << msg;
  EXPECT_TRUE(contains(msg, "tensor '")) << msg;
  EXPECT_TRUE(contains(msg, "differs from its recorded CRC-32")) << msg;
}

TEST(Checkpoint, ATruncatedShardIsNamed) {
  HandBuilt c("trunc");
  const std::string bytes = read_bytes(c.shard);
  write_text(c.shard, bytes.substr(0, bytes.size() - 10));
  const std::string msg = thrown_message<FormatError>([&] { verify_checkpoint_shard(c.dir, 0, 1); });
  EXPECT_TRUE(contains(msg, c.shard)) << msg;
  EXPECT_TRUE(contains(msg, "truncated")) << msg;
}

TEST(Checkpoint, AShardOfAnotherSaveIsRefused) {
  HandBuilt c("mix", /*shard_save_id=*/"00000000000000bb");
  const std::string msg = thrown_message<FormatError>([&] { verify_checkpoint_shard(c.dir, 0, 1); });
  EXPECT_TRUE(contains(msg, "save_id is 00000000000000bb, the manifest says 00000000000000aa")) << msg;
}

// Format version 3 changed only layout B's cut: a version-2 checkpoint of layout A is read, one of
// layout B is refused naming its layout (its record names a cut this build no longer computes), and
// version 1 is refused by version.
TEST(Checkpoint, OlderFormatVersionsAreReadOnlyWhereTheirPlanIsUnchanged) {
  auto rewrite = [](const HandBuilt& c, int version, const char* layout) {
    nlohmann::json m = nlohmann::json::parse(read_bytes(c.dir + "/manifest.json"));
    m["format_version"] = version;
    if (layout != nullptr) m["layout"] = {{"shard_layout", layout}};
    write_text(c.dir + "/manifest.json", m.dump());
  };
  HandBuilt a("v2a");
  rewrite(a, kOwnerAlignedSinceVersion, nullptr);
  EXPECT_EQ(verify_checkpoint_shard(a.dir, 0, 1).iteration, 4);
  HandBuilt b("v2b");
  rewrite(b, kOwnerAlignedSinceVersion, "element_wise");
  std::string msg = thrown_message<FormatError>([&] { verify_checkpoint_shard(b.dir, 0, 1); });
  EXPECT_TRUE(contains(msg, "format_version 2 with shard layout element_wise")) << msg;
  HandBuilt old("v1");
  rewrite(old, 1, nullptr);
  msg = thrown_message<FormatError>([&] { verify_checkpoint_shard(old.dir, 0, 1); });
  EXPECT_TRUE(contains(msg, "format_version 1, this build reads 3")) << msg;
  // A version-3 checkpoint of layout B is another grid for the same-grid verifier, which says so.
  HandBuilt b3("v3b");
  nlohmann::json m = nlohmann::json::parse(read_bytes(b3.dir + "/manifest.json"));
  m["layout"] = {{"shard_layout", "element_wise"}, {"bucket_elements", 1000}};
  write_text(b3.dir + "/manifest.json", m.dump());
  msg = thrown_message<ConfigError>([&] { verify_checkpoint_shard(b3.dir, 0, 1); });
  EXPECT_TRUE(contains(msg,
                       "saved at data-parallel size 1 under shard layout element_wise in buckets of 1000 "
                       "elements (0: one bucket), this job runs 1 rank(s) under owner_aligned"))
      << msg;
}

TEST(Checkpoint, AMissingManifestAndAnotherWorldSizeAreRefused) {
  HandBuilt c("world");
  EXPECT_TRUE(contains(thrown_message<ConfigError>([&] { verify_checkpoint_shard(c.dir, 0, 2); }),
                       "saved at data-parallel size 1, this job runs 2"));
  std::remove((c.dir + "/manifest.json").c_str());
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { verify_checkpoint_shard(c.dir, 0, 1); }), "manifest.json"));
}

TEST(Checkpoint, AManifestWithoutEveryRanksRngStateIsRefused) {
  HandBuilt c("rng");
  auto m = nlohmann::json::parse(read_bytes(c.dir + "/manifest.json"));
  m.erase("rng");
  write_text(c.dir + "/manifest.json", m.dump());
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { verify_checkpoint_shard(c.dir, 0, 1); }), "has no 'rng'"));
  m["rng"] = {{"ranks", nlohmann::json::array()}};
  write_text(c.dir + "/manifest.json", m.dump());
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { verify_checkpoint_shard(c.dir, 0, 1); }),
                       "'rng' must hold 'ranks', one state per rank"));
}

}  // namespace
}  // namespace orthotron

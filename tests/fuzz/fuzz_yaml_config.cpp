// fuzz_yaml_config.cpp: libFuzzer harness of the config reader: strict YAML loading
// (base/yaml_document.cpp), typed section access (base/yaml_fields.cpp) and the field tables
// (base/field_table.h), driven the way a config file is read: load the text, check the top-level
// keys, parse the "opts" section through a FieldTable, then round-trip the parsed value through
// to_json/from_json and through emit_yaml/load_yaml_text/parse_yaml. ConfigError and
// InvalidArgument are the expected refusals; any other exception or a sanitizer report is a finding,
// and so is a value the reader accepted that does not survive its own round trip (abort()).
#include <yaml-cpp/yaml.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/errors.h"
#include "base/field_table.h"
#include "base/yaml_document.h"
#include "base/yaml_fields.h"

namespace {

using orthotron::ConfigError;
using orthotron::Field;
using orthotron::FieldKind;
using orthotron::FieldTable;
using orthotron::InvalidArgument;
using orthotron::YamlSection;

enum class Schedule { kFast, kSlow, kCustom };

/// A small options struct with one field of every kind the tables support, shaped like the
/// optimizer options (a choice that enables a triple list, a cross-field rule).
struct Opts {
  double lr = 0.02;
  int steps = 5;
  bool nesterov = true;
  Schedule schedule = Schedule::kFast;
  std::array<double, 2> betas = {0.9, 0.95};
  std::vector<std::array<double, 3>> coefficients;  ///< only with schedule: custom
  double weight_decay = 0.0;
};

const orthotron::EnumNames<Schedule>& schedule_names() {
  static const orthotron::EnumNames<Schedule> names(
      "schedule", {{Schedule::kFast, "fast"}, {Schedule::kSlow, "slow"}, {Schedule::kCustom, "custom"}});
  return names;
}

Field<Opts> betas_field() {
  Field<Opts> f;
  f.key = "betas";
  f.kind = FieldKind::kNumberList;
  f.list_size = 2;
  f.bounds = {0, 1, false, true};
  f.doc = "[beta1, beta2]";
  f.get = [](const Opts& o) { return nlohmann::json({o.betas[0], o.betas[1]}); };
  f.set = [](Opts& o, const nlohmann::json& j) {
    o.betas[0] = j[0].get<double>();
    o.betas[1] = j[1].get<double>();
  };
  return f;
}

Field<Opts> coefficients_field() {
  Field<Opts> f;
  f.key = "coefficients";
  f.kind = FieldKind::kTripleList;
  f.doc = "[a, b, c] per step; only with schedule: custom";
  f.get = [](const Opts& o) { return nlohmann::json(o.coefficients); };
  f.set = [](Opts& o, const nlohmann::json& j) { o.coefficients = j.get<std::vector<std::array<double, 3>>>(); };
  f.applies = [](const Opts& o) { return o.schedule == Schedule::kCustom; };
  f.only_when = "when schedule is 'custom'";
  return f;
}

const FieldTable<Opts>& opts_fields() {
  static const FieldTable<Opts> table(
      "fuzz options",
      {
          orthotron::number_field<Opts, double>("lr", "learning rate", {0, 10},
                                                [](Opts& o) -> double& { return o.lr; }),
          orthotron::number_field<Opts, int>("steps", "iterations", {1, 100}, [](Opts& o) -> int& { return o.steps; }),
          orthotron::bool_field<Opts>("nesterov", "Nesterov momentum", [](Opts& o) -> bool& { return o.nesterov; }),
          orthotron::enum_field<Opts, Schedule>("schedule", "coefficient schedule", schedule_names(),
                                                [](Opts& o) -> Schedule& { return o.schedule; }),
          betas_field(),
          coefficients_field(),
          orthotron::number_field<Opts, double>("weight_decay", "decoupled weight decay", {0, 100},
                                                [](Opts& o) -> double& { return o.weight_decay; }),
      },
      [](const Opts& o) {
        if (o.lr * o.weight_decay >= 1) throw InvalidArgument("lr x weight_decay must be < 1");
        if (o.schedule == Schedule::kCustom && o.coefficients.empty()) {
          throw InvalidArgument("schedule is 'custom' but coefficients is not given");
        }
      });
  return table;
}

[[noreturn]] void broken(const std::string& what) {
  std::fprintf(stderr, "fuzz_yaml_config: round trip failed: %s\n", what.c_str());
  std::abort();
}

/// A parsed value must come back unchanged through JSON and through emitted YAML.
void check_round_trip(const Opts& parsed) {
  const auto& table = opts_fields();
  const nlohmann::json j = table.to_json(parsed);
  Opts back;
  try {
    back = table.from_json(j, Opts{});
  } catch (const orthotron::Error& e) {
    broken(std::string("from_json(to_json(v)) threw: ") + e.what() + " for " + j.dump());
  }
  if (table.to_json(back) != j) broken("JSON round trip changed " + j.dump() + " into " + table.to_json(back).dump());

  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "opts" << YAML::Value << YAML::BeginMap;
  table.emit_yaml(out, parsed);
  out << YAML::EndMap << YAML::EndMap;
  if (!out.good()) broken("emit_yaml failed: " + out.GetLastError());
  try {
    const YamlSection root(orthotron::load_yaml_text(out.c_str(), "emitted.yaml"), "emitted.yaml", "");
    root.check_keys({"opts"});
    const Opts again = table.parse_yaml(root.child("opts"), Opts{});
    if (table.to_json(again) != j) {
      broken("YAML round trip changed " + j.dump() + " into " + table.to_json(again).dump());
    }
  } catch (const orthotron::Error& e) {
    broken(std::string("parse_yaml(emit_yaml(v)) threw: ") + e.what() + " for\n" + out.c_str());
  }
}

/// The typed getters a hand-written section reader uses, each refusal caught on its own.
void read_misc(const YamlSection& misc) {
  const auto attempt = [](auto&& read) {
    try {
      read();
    } catch (const ConfigError&) {
    }
  };
  attempt([&] { misc.check_keys({"x", "n", "flag", "name", "tags", "pair"}); });
  attempt([&] { (void)misc.get_int("n", 3, -5, 5); });
  attempt([&] { (void)misc.get_bool("flag", false); });
  attempt([&] { (void)misc.get_string("name", "a", {"alpha", "beta", "gamma"}); });
  attempt([&] { (void)misc.get_string_list("tags"); });
  attempt([&] { (void)misc.where("x"); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  YAML::Node doc;
  try {
    doc = orthotron::load_yaml_text(text, "fuzz.yaml");
  } catch (const ConfigError&) {
    return 0;
  }
  const YamlSection root(doc, "fuzz.yaml", "");
  try {
    root.check_keys({"opts", "misc", "name"});
  } catch (const ConfigError&) {
  }
  if (root.has("opts")) {
    try {
      check_round_trip(opts_fields().parse_yaml(root.child("opts"), Opts{}));
    } catch (const ConfigError&) {
    } catch (const InvalidArgument&) {
    }
  }
  if (root.has("misc")) read_misc(root.child("misc"));
  return 0;
}

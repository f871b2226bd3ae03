// option_fields.cpp: the one declaration of every Muon and AdamW hyperparameter and enum name.
#include "optim/option_fields.h"

#include <sstream>

namespace orthotron {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Decoupled weight decay multiplies by (1 - lr x wd): at 1 or more the weights flip sign or vanish.
void check_decay(double lr, double wd) {
  if (lr * wd >= 1) {
    std::ostringstream msg;
    msg << "lr x weight_decay must be < 1 (decoupled decay multiplies the weights by 1 - lr x weight_decay), got " << lr
        << " x " << wd << " = " << lr * wd;
    throw InvalidArgument(msg.str());
  }
}

Field<MuonOptions> ns_schedule_field() {
  Field<MuonOptions> f;
  f.key = "ns_schedule";
  f.kind = FieldKind::kChoice;
  f.doc = "Newton-Schulz coefficient schedule";
  f.choices = ns_schedule_names();
  f.choices.push_back("custom");
  f.get = [](const MuonOptions& m) { return nlohmann::json(m.ns.schedule.name); };
  f.set = [](MuonOptions& m, const nlohmann::json& j) {
    const std::string name = j.get<std::string>();
    if (name == "custom") {
      m.ns.schedule = NsSchedule{"custom", {}, 1.0, m.ns.schedule.eps};
    } else {
      m.ns.schedule = ns_schedule_by_name(name);
    }
  };
  return f;
}

Field<MuonOptions> ns_coefficients_field() {
  Field<MuonOptions> f;
  f.key = "ns_coefficients";
  f.kind = FieldKind::kTripleList;
  f.doc = "[a, b, c] per step (the last repeats); only with ns_schedule: custom";
  f.get = [](const MuonOptions& m) { return nlohmann::json(m.ns.schedule.coefficients); };
  f.set = [](MuonOptions& m, const nlohmann::json& j) {
    m.ns.schedule = ns_custom_schedule(j.get<std::vector<NsCoefficients>>(), m.ns.schedule.eps);
  };
  f.applies = [](const MuonOptions& m) { return m.ns.schedule.name == "custom"; };
  f.only_when = "when ns_schedule is 'custom'";
  return f;
}

}  // namespace

const EnumNames<MomentumForm>& momentum_form_names() {
  static const EnumNames<MomentumForm> names("momentum form",
                                             {{MomentumForm::kEma, "ema"}, {MomentumForm::kSum, "sum"}});
  return names;
}

const EnumNames<ScaleMode>& scale_mode_names() {
  static const EnumNames<ScaleMode> names("scale mode", {{ScaleMode::kOriginal, "original"},
                                                         {ScaleMode::kMatchRmsAdamW, "match_rms_adamw"},
                                                         {ScaleMode::kSpectral, "spectral"}});
  return names;
}

const EnumNames<Algorithm>& algorithm_names() {
  static const EnumNames<Algorithm> names("algorithm", {{Algorithm::kMuon, "muon"}, {Algorithm::kAdamW, "adamw"}});
  return names;
}

const EnumNames<AdamWKernel>& adamw_kernel_names() {
  static const EnumNames<AdamWKernel> names("AdamW kernel",
                                            {{AdamWKernel::kFused, "fused"}, {AdamWKernel::kReference, "reference"}});
  return names;
}

std::string to_string(AdamWKernel k) {
  return adamw_kernel_names().name(k);
}

const EnumNames<NsGram>& ns_gram_names() {
  static const EnumNames<NsGram> names("Newton-Schulz Gram mode",
                                       {{NsGram::kOff, "off"}, {NsGram::kAuto, "auto"}, {NsGram::kOn, "on"}});
  return names;
}

const EnumNames<NsParallel>& ns_parallel_names() {
  static const EnumNames<NsParallel> names("Newton-Schulz parallelism",
                                           {{NsParallel::kProducts, "products"}, {NsParallel::kMatrices, "matrices"}});
  return names;
}

const EnumNames<at::ScalarType>& ns_dtype_names() {
  static const EnumNames<at::ScalarType> names("Newton-Schulz dtype", {{at::kFloat, "float32"},
                                                                       {at::kDouble, "float64"},
                                                                       {at::kBFloat16, "bfloat16"},
                                                                       {at::kHalf, "float16"},
                                                                       {kNsDtypeAuto, "auto"}});
  return names;
}

std::string to_string(MomentumForm f) {
  return momentum_form_names().name(f);
}
std::string to_string(ScaleMode m) {
  return scale_mode_names().name(m);
}
std::string to_string(Algorithm a) {
  return algorithm_names().name(a);
}
MomentumForm parse_momentum_form(const std::string& s) {
  return momentum_form_names().parse(s);
}
ScaleMode parse_scale_mode(const std::string& s) {
  return scale_mode_names().parse(s);
}
Algorithm parse_algorithm(const std::string& s) {
  return algorithm_names().parse(s);
}
at::ScalarType parse_ns_dtype(const std::string& name) {
  return ns_dtype_names().parse(name);
}
std::string ns_dtype_name(at::ScalarType t) {
  return ns_dtype_names().name(t);
}

const FieldTable<MuonOptions>& muon_option_fields() {
  using M = MuonOptions;
  static const FieldTable<M> table(
      "Muon options",
      {
          number_field<M, double>("lr", "learning rate", {0, 10}, [](M& m) -> double& { return m.lr; }),
          number_field<M, double>("momentum", "momentum coefficient beta", {0, 1, false, true},
                                  [](M& m) -> double& { return m.momentum; }),
          bool_field<M>("nesterov", "Nesterov momentum", [](M& m) -> bool& { return m.nesterov; }),
          enum_field<M, MomentumForm>("momentum_form", "ema: M = bM + (1-b)G; sum: M = bM + G", momentum_form_names(),
                                      [](M& m) -> MomentumForm& { return m.momentum_form; }),
          enum_field<M, ScaleMode>("scale_mode", "shape scale of the orthogonalized update", scale_mode_names(),
                                   [](M& m) -> ScaleMode& { return m.scale_mode; }),
          number_field<M, double>("spectral_factor", "extra factor of scale_mode spectral", {0, 1000, true, false},
                                  [](M& m) -> double& { return m.spectral_factor; }),
          number_field<M, double>("weight_decay", "decoupled weight decay", {0, 100},
                                  [](M& m) -> double& { return m.weight_decay; }),
          ns_schedule_field(),
          ns_coefficients_field(),
          number_field<M, double>("ns_eps", "Newton-Schulz normalization epsilon", {0, 1, true, true},
                                  [](M& m) -> double& { return m.ns.schedule.eps; }),
          number_field<M, int>("ns_steps", "Newton-Schulz iterations", {1, 100},
                               [](M& m) -> int& { return m.ns.steps; }),
          enum_field<M, at::ScalarType>("ns_dtype",
                                        "dtype Newton-Schulz computes in (auto: bfloat16 where the hardware has it)",
                                        ns_dtype_names(), [](M& m) -> at::ScalarType& { return m.ns.compute_dtype; }),
          enum_field<M, NsGram>("ns_gram",
                                "iterate on the Gram matrix X X^T: off | auto (where it saves FLOPs: aspect >= 2) | on",
                                ns_gram_names(), [](M& m) -> NsGram& { return m.ns.gram; }),
          number_field<M, int>("ns_gram_restart", "Gram iteration: recompute X and X X^T every N steps (0: never)",
                               {0, 100}, [](M& m) -> int& { return m.ns.gram_restart; }),
          enum_field<M, NsParallel>(
              "ns_parallel",
              "threads per Newton-Schulz: products (BLAS threads each product) | matrices (one thread per matrix)",
              ns_parallel_names(), [](M& m) -> NsParallel& { return m.ns.parallel; }),
          bool_field<M>("ns_symmetric",
                        "products with a symmetric result (X X^T, A A, the Gram iteration's) as their upper block "
                        "triangle, mirrored",
                        [](M& m) -> bool& { return m.ns.symmetric; }),
      },
      [](const M& m) {
        check_decay(m.lr, m.weight_decay);
        if (m.ns.schedule.coefficients.empty()) {
          throw InvalidArgument("ns_schedule is 'custom' but ns_coefficients is not given");
        }
        check_ns_schedule_stable(m.ns.schedule, m.ns.steps);
      });
  return table;
}

static Field<AdamWOptions> betas_field() {
  Field<AdamWOptions> f;
  f.key = "betas";
  f.kind = FieldKind::kNumberList;
  f.list_size = 2;
  f.bounds = {0, 1, false, true};
  f.doc = "[beta1, beta2] of the moment averages";
  f.get = [](const AdamWOptions& a) { return nlohmann::json({a.beta1, a.beta2}); };
  f.set = [](AdamWOptions& a, const nlohmann::json& j) {
    a.beta1 = j[0].get<double>();
    a.beta2 = j[1].get<double>();
  };
  return f;
}

const FieldTable<AdamWOptions>& adamw_option_fields() {
  using A = AdamWOptions;
  static const FieldTable<A> table(
      "AdamW options",
      {
          number_field<A, double>("lr", "learning rate", {0, 10}, [](A& a) -> double& { return a.lr; }),
          betas_field(),
          number_field<A, double>("eps", "denominator epsilon", {0, 1, true, false},
                                  [](A& a) -> double& { return a.eps; }),
          number_field<A, double>("weight_decay", "decoupled weight decay", {0, 100},
                                  [](A& a) -> double& { return a.weight_decay; }),
          enum_field<A, AdamWKernel>(
              "kernel", "fused: one multithreaded pass per element; reference: bitwise torch::optim::AdamW",
              adamw_kernel_names(), [](A& a) -> AdamWKernel& { return a.kernel; }),
      },
      [](const A& a) { check_decay(a.lr, a.weight_decay); });
  return table;
}

void MuonOptions::validate() const {
  muon_option_fields().validate(*this);
}
void AdamWOptions::validate() const {
  adamw_option_fields().validate(*this);
}

}  // namespace orthotron

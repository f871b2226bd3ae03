// option_fields.h: the field tables of MuonOptions and AdamWOptions and the name tables of their
// enums. Each hyperparameter is declared here once; YAML parsing, YAML/JSON emission, state-dict
// parsing and validate() all read these tables. Depends on base/field_table.h and optim/ options.
#pragma once

#include "base/field_table.h"
#include "optim/adamw.h"
#include "optim/muon.h"
#include "optim/param_routing.h"

namespace orthotron {

const EnumNames<MomentumForm>& momentum_form_names();
const EnumNames<ScaleMode>& scale_mode_names();
const EnumNames<Algorithm>& algorithm_names();
const EnumNames<at::ScalarType>& ns_dtype_names();
const EnumNames<NsGram>& ns_gram_names();
const EnumNames<NsParallel>& ns_parallel_names();
const EnumNames<AdamWKernel>& adamw_kernel_names();

/// lr, momentum, nesterov, momentum_form, scale_mode, spectral_factor, weight_decay, ns_schedule,
/// ns_coefficients (custom only), ns_eps, ns_steps, ns_dtype; cross-field rules: lr x weight_decay
/// < 1 and a schedule that stays bounded (check_ns_schedule_stable).
const FieldTable<MuonOptions>& muon_option_fields();
/// lr, betas, eps, weight_decay, kernel; cross-field rule: lr x weight_decay < 1.
const FieldTable<AdamWOptions>& adamw_option_fields();

}  // namespace orthotron

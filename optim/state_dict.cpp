// state_dict.cpp: the load report's text and the lossless dtype rule of loads.
#include "optim/state_dict.h"

#include <cstring>
#include <sstream>

#include "base/errors.h"

namespace orthotron {

std::string LoadReport::to_string() const {
  std::ostringstream out;
  if (skipped.empty()) {
    out << "complete load";
  } else {
    out << "partial load, " << skipped.size() << " item(s) skipped:";
    for (const auto& s : skipped) out << "\n  - " << s;
  }
  if (!changed_hyperparameters.empty()) {
    out << "\n" << changed_hyperparameters.size() << " hyperparameter(s) differ from the saved state:";
    for (const auto& c : changed_hyperparameters) out << "\n  - " << c;
  }
  if (!converted.empty()) {
    out << "\n" << converted.size() << " tensor(s) converted losslessly to the live dtype:";
    for (const auto& c : converted) out << "\n  - " << c;
  }
  return out.str();
}

at::Tensor convert_losslessly(const at::Tensor& stored, at::ScalarType live, const std::string& key) {
  const at::ScalarType from = stored.scalar_type();
  if (from == live) return stored;
  const std::string what =
      "tensor '" + key + "' is " + c10::toString(from) + ", the live state is " + c10::toString(live);
  if (!at::isFloatingType(from) || !at::isFloatingType(live)) {
    throw StateDictError(what + ": only floating-point dtypes are converted");
  }
  const at::Tensor src = stored.contiguous();
  const at::Tensor converted = src.to(live);
  const at::Tensor back = converted.to(from).contiguous();
  if (std::memcmp(back.data_ptr(), src.data_ptr(), src.nbytes()) != 0) {
    // Element-wise bit comparison through same-width integers finds the first value that changes.
    const at::ScalarType bits = src.element_size() == 8 ? at::kLong : src.element_size() == 4 ? at::kInt : at::kShort;
    const at::Tensor differs = src.view(bits).reshape(-1).ne(back.view(bits).reshape(-1));
    const int64_t first = differs.nonzero()[0][0].item<int64_t>();
    std::ostringstream msg;
    msg.precision(9);
    msg << what << ": converting would lose bits (" << differs.sum().item<int64_t>() << " of " << src.numel()
        << " values change; the first at flat index " << first << ": " << src.reshape(-1)[first].item<double>()
        << " becomes " << converted.reshape(-1)[first].item<double>() << ")";
    throw StateDictError(msg.str());
  }
  return converted;
}

}  // namespace orthotron

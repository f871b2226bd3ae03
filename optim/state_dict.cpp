// state_dict.cpp: the load report's text.
#include "optim/state_dict.h"

#include <sstream>

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
  return out.str();
}

}  // namespace orthotron

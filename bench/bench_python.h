// bench_python.h: running a Python side of a side-by-side benchmark (the cached torch venv) and
// reading back the figures it prints, one "name value" pair per line. Header-only; bench/ only.
#pragma once

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>

namespace orthotron::bench {

/// Runs `command` (stderr joined to stdout) and returns every line of the form "name number" as
/// figures. An empty map, with the output on stderr under `who`, when the command fails or prints
/// none of the `required` figure.
inline std::map<std::string, double> run_python_figures(const std::string& command, const std::string& required,
                                                        const char* who) {
  std::map<std::string, double> figures;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen((command + " 2>&1").c_str(), "r"), ::pclose);
  if (!pipe) return figures;
  std::array<char, 512> buf{};
  std::string out;
  while (std::fgets(buf.data(), buf.size(), pipe.get()) != nullptr) out += buf.data();
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string name, value, rest;
    if (!(words >> name >> value) || (words >> rest)) continue;
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (end != nullptr && *end == '\0') figures[name] = v;
  }
  if (!figures.count(required)) {
    std::fprintf(stderr, "%s: %s failed:\n%s\n", who, command.c_str(), out.c_str());
    figures.clear();
  }
  return figures;
}

}  // namespace orthotron::bench

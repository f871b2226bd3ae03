// errors.h: the typed exceptions every orthotron component throws. It lives in base/, the
// lowest layer, so that every layer above (parallel, optim, engine) can include it.
// Depends on nothing but the standard library; every other header may include it.
#pragma once

#include <stdexcept>
#include <string>

namespace orthotron {

/// Base of all orthotron errors. The message names what is wrong (key, file, rank, tensor) and
/// the expected versus actual value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A hyperparameter or argument outside its valid range, or of the wrong kind.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A tensor whose shape, rank or dtype does not fit the operation.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A YAML configuration that does not validate: unknown key, wrong type, value out of range.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// Parameter routing that is incomplete or inconsistent (unclaimed parameter, rule that matches nothing).
class RoutingError : public Error {
 public:
  using Error::Error;
};

/// A state dict or checkpoint that cannot be loaded into the object it was offered to.
class StateDictError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be read or written, or whose bytes are not the format they claim to be.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A collective that failed, timed out, or was called inconsistently (wrong shape, dtype or split
/// sizes). The message names the rank, host, operation and size.
class CommError : public Error {
 public:
  using Error::Error;
};

/// A broken internal invariant found by a debug check (debug_checks.h): a bug in orthotron or in
/// how it is driven, never bad user input. The message names what was planned and what happened.
class InvariantError : public Error {
 public:
  using Error::Error;
};

}  // namespace orthotron

// debug_checks.h: the switch for invariant checks that cost time on every step (the Newton-Schulz
// plan audit, for one). Off by default; on when the environment sets ORTHOTRON_DEBUG_CHECKS=1 or a
// program calls set_debug_checks(true). The test mains turn it on, so every test runs checked.
#pragma once

namespace orthotron {

/// True when debug checks are on. The environment is read once, on the first call.
bool debug_checks_enabled();

/// Turns debug checks on or off for this process (overrides the environment). Multi-rank code may
/// only make local decisions from it: ranks are not required to agree on it.
void set_debug_checks(bool on);

}  // namespace orthotron

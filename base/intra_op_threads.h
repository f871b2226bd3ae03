// intra_op_threads.h: how many of the process's intra-op threads an at::parallel_for in orthotron's
// own code actually reaches. ATen's parallel_for is an inline template whose OpenMP pragmas compile
// only where the including file is built with -fopenmp; without it (as before 2026-12-06) every
// parallel_for of ours ran on the calling thread alone, whatever at::set_num_threads said.
// cmake/Dependencies.cmake compiles every orthotron target with OpenMP; this probe lets a test
// and the engine's startup line say whether that took.
#pragma once

namespace orthotron {

/// Runs an at::parallel_for over at::get_num_threads() units, one per thread, compiled with the
/// flags of orthotron's libraries, and returns how many distinct threads ran a unit (1 to
/// at::get_num_threads()). Blocking; call it outside a parallel region (inside one it returns 1).
int intra_op_threads_reached();

}  // namespace orthotron

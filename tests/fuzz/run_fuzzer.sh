#!/usr/bin/env bash
# run_fuzzer.sh: one bounded libFuzzer run for CTest, over a scratch copy of the seed corpus (the
# fuzzer adds its new inputs there, so the checked-in corpus is never modified).
#
#   run_fuzzer.sh <fuzzer> <seed dir> <artifact dir> [libFuzzer flags...]
#   run_fuzzer.sh --skip <reason>        # prints the reason and exits 77 (CTest: skipped)
#
# Any crash, sanitizer report, leak, timeout or out-of-memory makes libFuzzer exit non-zero; the
# reproducer is kept in <artifact dir> and the command to replay it is printed.
set -uo pipefail

if [ "${1:-}" = "--skip" ]; then
  echo "SKIPPED: ${2:-libFuzzer harnesses not built}"
  exit 77
fi
if [ $# -lt 3 ]; then
  echo "usage: $0 <fuzzer> <seed dir> <artifact dir> [libFuzzer flags...] | --skip <reason>" >&2
  exit 2
fi
fuzzer=$1
seeds=$2
artifacts=$3
shift 3
[ -x "$fuzzer" ] || { echo "fuzzer $fuzzer is not built" >&2; exit 2; }
[ -d "$seeds" ] || { echo "seed corpus $seeds does not exist" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/orthotron-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT
cp -R "$seeds/." "$work/" || exit 2
mkdir -p "$artifacts" || exit 2

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
echo "$fuzzer $* ($(find "$work" -type f | wc -l) seeds from $seeds)"
# libFuzzer's own default exit status for a finding is 77, CTest's skip code: map every failure to 1.
"$fuzzer" -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" "$work"
rc=$?
if [ $rc -ne 0 ]; then
  echo "FAILED: $fuzzer exited with $rc; reproducers in $artifacts:"
  ls -l "$artifacts"
  echo "replay one with: $fuzzer <file>   (see tests/fuzz/README.md)"
  exit 1
fi
exit 0

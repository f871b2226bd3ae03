#!/usr/bin/env bash
# expect_job_failure.sh: runs a command that must FAIL: it must exit non-zero within LIMIT seconds
# and print TEXT. Used by CTest to prove that a failing rank brings an mpirun job down instead of
# hanging it.
#   usage: expect_job_failure.sh LIMIT_SECONDS TEXT COMMAND...
set -u
limit=$1 text=$2
shift 2
start=$(date +%s)
out=$(timeout --kill-after=5 "$limit" "$@" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
printf '%s\n' "$out"
echo "expect_job_failure: exit code $rc after ${elapsed}s"
if [ "$rc" -eq 0 ]; then echo "expect_job_failure: FAIL: the job exited 0"; exit 1; fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "expect_job_failure: FAIL: the job hung past ${limit}s"; exit 1; fi
if ! grep -qF -- "$text" <<<"$out"; then echo "expect_job_failure: FAIL: output lacks '$text'"; exit 1; fi
echo "expect_job_failure: OK (non-zero exit within ${elapsed}s, message present)"

#!/usr/bin/env bash
# two_node.sh: a real two-node MPI job on one machine. Two network namespaces ("nodes", each with
# its own host name) joined by a veth pair; launch/launch.sh runs mpirun inside the first with a
# hostfile naming both addresses, and Open MPI starts its daemon in the second through
# launch/netns_agent.sh instead of ssh. MPI and Open MPI's own traffic are restricted to TCP over the
# veth (no shared memory), and the veth's byte counters must grow: the bytes really crossed.
#
#   usage: two_node.sh [--ranks-per-node K] [--expect REGEX] [--min-kib N] [--timeout S] PROGRAM [ARGS...]
#     --ranks-per-node K  ranks in each namespace (default 1; the job has 2*K ranks)
#     --expect REGEX      an extended regex some line of the job's output must match
#     --min-kib N         the least KiB the veth must carry each way during the job (default 16)
#     --timeout S         seconds the job may run (default 60)
# Exits 0 on success, 1 on failure, 77 (skip) where namespaces cannot be made (not root, no
# CAP_NET_ADMIN, no `ip`/`unshare`/`mpirun`). Needs nothing but this checkout's launch/ scripts.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
launch_dir=$(cd "$here/../../launch" && pwd)

rpn=1 expect="" min_kib=16 job_timeout=60
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks-per-node) rpn=$2; shift 2 ;;
    --expect) expect=$2; shift 2 ;;
    --min-kib) min_kib=$2; shift 2 ;;
    --timeout) job_timeout=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "two_node.sh: unknown option '$1'" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "two_node.sh: missing PROGRAM (see the usage at the top of $0)" >&2; exit 2; }
[[ "$rpn" =~ ^[1-9][0-9]*$ ]] || { echo "two_node.sh: --ranks-per-node must be a positive integer, got '$rpn'" >&2; exit 2; }

skip() {
  echo "two_node: SKIPPED: $*"
  exit 77
}
for tool in ip unshare mpirun timeout; do
  command -v "$tool" >/dev/null || skip "'$tool' is not installed"
done
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (running as uid $(id -u))"

# Names unique to this run (interface names are at most 15 characters). Namespaces left behind by
# an earlier run that was killed (its process is gone) are removed first.
id=$$
ns_a=ot2n-$id-a ns_b=ot2n-$id-b
if_a=ot2n${id}a if_b=ot2n${id}b
addr_a=10.77.0.1 addr_b=10.77.0.2 subnet=10.77.0.0/24
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^ot2n-[0-9]+-[ab]$/ { print $1 }'); do
  pid=${ns#ot2n-}
  pid=${pid%-*}
  kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
done

work=$(mktemp -d)
job_pid=""
cleanup() {
  # An interrupted job: stop mpirun (through timeout, which passes the signal on) before the
  # namespaces go, so no daemon or rank outlives the test.
  if [ -n "$job_pid" ] && kill -0 "$job_pid" 2>/dev/null; then
    kill -TERM "$job_pid" 2>/dev/null || true
    wait "$job_pid" 2>/dev/null || true
  fi
  ip netns del "$ns_a" 2>/dev/null || true  # deleting a namespace deletes its end of the veth
  ip netns del "$ns_b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$ns_a" 2>"$work/err" || skip "'ip netns add' failed (no CAP_NET_ADMIN?): $(cat "$work/err")"
ip netns add "$ns_b" 2>"$work/err" || skip "'ip netns add' failed: $(cat "$work/err")"
ip link add "$if_a" netns "$ns_a" type veth peer name "$if_b" netns "$ns_b" 2>"$work/err" ||
  skip "cannot create a veth pair: $(cat "$work/err")"
ip -n "$ns_a" addr add "$addr_a/24" dev "$if_a"
ip -n "$ns_b" addr add "$addr_b/24" dev "$if_b"
for pair in "$ns_a:$if_a" "$ns_b:$if_b"; do
  ip -n "${pair%%:*}" link set lo up
  ip -n "${pair%%:*}" link set "${pair#*:}" up
done
unshare --uts true 2>/dev/null || skip "'unshare --uts' failed (no CAP_SYS_ADMIN?)"

printf '%s slots=%d\n%s slots=%d\n' "$addr_a" "$rpn" "$addr_b" "$rpn" >"$work/hostfile"
# The agent maps hostfile addresses to namespaces and gives each namespace its own host name.
export ORTHOTRON_NETNS_HOSTS="$addr_a=$ns_a $addr_b=$ns_b" ORTHOTRON_NETNS_UTS=1
np=$((2 * rpn))
# Both "nodes" share this machine's cores: one share of intra-op threads per rank of the whole job
# (launch.sh's default, cores / ranks per node, would oversubscribe them and spin OpenMP threads).
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone would answer OMP_NUM_THREADS
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$((cores / np > 0 ? cores / np : 1))}"

# Runs launch/launch.sh inside namespace A (host name = its name) with the two-node settings:
# TCP only (no shared memory), over the veth subnet only, daemons started through the agent.
# shellcheck disable=SC2016  # expanded later, by the inner shell, on purpose
run_job() {
  timeout --kill-after=5 "$job_timeout" \
    ip netns exec "$ns_a" unshare --uts bash -c 'hostname "$0" && exec "$@"' "$ns_a" \
    bash "$launch_dir/launch.sh" --hostfile "$work/hostfile" --ranks-per-node "$rpn" --net "$subnet" \
    --mca btl tcp,self --mca pml ob1 --mca plm_rsh_agent "$launch_dir/netns_agent.sh" "$np" "$@" &
  job_pid=$!
  # Waiting in the background lets an INT/TERM reach the trap at once. Returns the job's status.
  local rc=0
  wait "$job_pid" || rc=$?
  job_pid=""
  return "$rc"
}
counter() { ip netns exec "$ns_a" cat "/sys/class/net/$if_a/statistics/$1"; }

# 1. Placement: K ranks in each namespace, each namespace with its own host name.
# shellcheck disable=SC2016  # expanded later, by the inner shell, on purpose
run_job bash -c 'echo "placement rank=$OMPI_COMM_WORLD_RANK local_rank=$OMPI_COMM_WORLD_LOCAL_RANK ns=$(ip netns identify) host=$(hostname)"' \
  >"$work/placement.log" 2>&1 || { cat "$work/placement.log"; echo "two_node: FAIL: the placement job failed"; exit 1; }
grep '^placement' "$work/placement.log" | sort
for ns in "$ns_a" "$ns_b"; do
  got=$(grep -c "^placement .* ns=$ns host=$ns\$" "$work/placement.log" || true)
  [ "$got" -eq "$rpn" ] || { echo "two_node: FAIL: $got rank(s) ran in namespace $ns with host name $ns, expected $rpn"; exit 1; }
done

# 2. The job, with the veth's byte counters read before and after.
rx0=$(counter rx_bytes) tx0=$(counter tx_bytes)
start=$(date +%s.%N)
set +e
run_job "$@" >"$work/job.log" 2>&1
rc=$?
set -e
wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
rx1=$(counter rx_bytes) tx1=$(counter tx_bytes)
cat "$work/job.log"
drx=$((rx1 - rx0)) dtx=$((tx1 - tx0))
echo "two_node: veth $if_a ($ns_a): rx $rx0 -> $rx1 (+$drx bytes), tx $tx0 -> $tx1 (+$dtx bytes); job wall ${wall} s"

status=0
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 124 ] && echo "two_node: FAIL: the job ran past ${job_timeout} s" || echo "two_node: FAIL: the job exited with code $rc, expected 0"
  status=1
fi
if [ -n "$expect" ] && ! grep -qE -- "$expect" "$work/job.log"; then
  echo "two_node: FAIL: no output line matches the expected regex '$expect'"
  status=1
fi
min_bytes=$((min_kib * 1024))
if [ "$drx" -lt "$min_bytes" ] || [ "$dtx" -lt "$min_bytes" ]; then
  echo "two_node: FAIL: the veth carried rx +$drx / tx +$dtx bytes, expected at least $min_bytes each way"
  status=1
fi
[ "$status" -eq 0 ] || exit 1
echo "two_node: OK ($np ranks, $rpn per namespace; veth rx +$drx tx +$dtx bytes; ${wall} s)"

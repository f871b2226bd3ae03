#!/usr/bin/env bash
# launch_dry_run.sh: the mpirun command lines launch/launch.sh builds (--dry-run; mpirun is never
# started): single machine, hostfile with ranks per node, forwarded environment, network options,
# quoting that a shell reads back word for word, and the errors for bad input.
#   usage: launch_dry_run.sh SOURCE_DIR
set -euo pipefail
launch="$1/launch/launch.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone would answer OMP_NUM_THREADS
# Runs launch.sh with a clean environment of our choosing (the caller's ORTHOTRON_*/NCCL_* would
# otherwise appear in the command line).
dry() { env -i PATH="$PATH" HOME="$HOME" "${extra_env[@]}" bash "$launch" --dry-run "$@"; }
extra_env=() refuses_env=()

# has CASE LINE WORDS: the command line contains WORDS as whole words, in that order, adjacent.
has() {
  if [[ " $2 " != *" $3 "* ]]; then
    echo "FAIL [$1]: expected '$3' in: $2"
    failures=$((failures + 1))
  fi
}
lacks() {
  if [[ " $2 " == *" $3 "* ]]; then
    echo "FAIL [$1]: did not expect '$3' in: $2"
    failures=$((failures + 1))
  fi
}
# refuses CASE MESSAGE ARGS...: launch.sh exits 2 and says MESSAGE.
refuses() {
  local name=$1 message=$2
  shift 2
  local rc=0
  env -i PATH="$PATH" HOME="$HOME" "${refuses_env[@]}" bash "$launch" "$@" >"$work/out" 2>&1 || rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qF -- "$message" "$work/out"; then
    echo "FAIL [$name]: expected exit 2 and '$message', got exit $rc: $(cat "$work/out")"
    failures=$((failures + 1))
  fi
}

# Single machine: today's usage, threads = cores / N, oversubscription only past the cores.
out=$(dry 2 prog --config x.yaml)
echo "single: $out"
has single "$out" "mpirun --bind-to none"
has single "$out" "-np 2 prog --config x.yaml"
has single "$out" "-x OMP_NUM_THREADS=$((cores / 2 > 0 ? cores / 2 : 1))"
lacks single "$out" "--oversubscribe"
lacks single "$out" "--hostfile"
out=$(dry $((cores + 1)) prog)
has oversubscribed "$out" "--oversubscribe"
has oversubscribed "$out" "-x OMP_NUM_THREADS=1"
# The core count is the machine's, not OMP_NUM_THREADS (which GNU nproc would report).
extra_env=(OMP_NUM_THREADS=$((cores + 5)))
out=$(dry $((cores + 1)) prog)
has oversubscribed-omp "$out" "--oversubscribe"
has oversubscribed-omp "$out" "-x OMP_NUM_THREADS=$((cores + 5))"
extra_env=()
if [ "$(id -u)" -eq 0 ]; then has root "$out" "--allow-run-as-root"; else lacks root "$out" "--allow-run-as-root"; fi

# Hostfile: comments, blank lines and a repeated host do not count as nodes; ppr mapping.
printf '# two nodes\nnode-a slots=4\n\nnode-b slots=4 # second\nnode-a slots=4\n' >"$work/hosts"
out=$(dry --hostfile "$work/hosts" --ranks-per-node 2 4 prog)
echo "hostfile: $out"
has hostfile "$out" "--hostfile $work/hosts"
has hostfile "$out" "--map-by ppr:2:node"
has hostfile "$out" "-x OMP_NUM_THREADS=$((cores / 2 > 0 ? cores / 2 : 1))"
has hostfile "$out" "-np 4 prog"
out=$(dry --hostfile "$work/hosts" --ranks-per-node $((cores + 1)) 2 prog)
has hostfile-oversubscribed "$out" "--oversubscribe"
out=$(dry --hostfile "$work/hosts" 4 prog)
lacks hostfile-no-ppr "$out" "--map-by"

# Inside a Slurm allocation mpirun takes the nodes from Slurm: ppr without a hostfile.
extra_env=(SLURM_NNODES=3)
out=$(dry --ranks-per-node 2 6 prog)
echo "slurm: $out"
has slurm "$out" "--map-by ppr:2:node"
lacks slurm "$out" "--hostfile"
has slurm "$out" "-np 6 prog"
refuses_env=(SLURM_NNODES=2)
refuses slurm-too-many "N=6 ranks do not fit 2 node(s) of the Slurm allocation" --ranks-per-node 2 6 prog
refuses_env=()
extra_env=()

# Environment: --env NAME=VALUE and NAME, and the variables always forwarded; OMP_NUM_THREADS kept.
extra_env=(ORTHOTRON_DEBUG_CHECKS=1 NCCL_DEBUG=INFO MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 OMP_NUM_THREADS=3 BAZ=1 UNRELATED=1)
out=$(dry --env FOO=bar --env BAZ 2 prog)
echo "env: $out"
has env "$out" "-x FOO=bar"
has env "$out" "-x BAZ"
has env "$out" "-x OMP_NUM_THREADS=3"
for name in ORTHOTRON_DEBUG_CHECKS NCCL_DEBUG MASTER_ADDR MASTER_PORT; do has env "$out" "-x $name"; done
lacks env "$out" "-x UNRELATED"
extra_env=()

# Network: an interface also sets NCCL's socket interface; a subnet only Open MPI's.
out=$(dry --net eth9 --mca btl tcp,self 2 prog)
echo "net: $out"
has net "$out" "--mca btl_tcp_if_include eth9 --mca oob_tcp_if_include eth9"
has net "$out" "--mca btl tcp,self"
has net "$out" "-x NCCL_SOCKET_IFNAME=eth9"
out=$(dry --net eth9 --env NCCL_SOCKET_IFNAME=ib0 2 prog)
has net-own-nccl "$out" "-x NCCL_SOCKET_IFNAME=ib0"
lacks net-own-nccl "$out" "-x NCCL_SOCKET_IFNAME=eth9"
out=$(dry --net 10.77.0.0/24 2 prog)
has net-subnet "$out" "--mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24"
lacks net-subnet "$out" "-x NCCL_SOCKET_IFNAME=10.77.0.0/24"

# Quoting: the printed line, read back by a shell, gives the program its arguments unchanged.
# shellcheck disable=SC2016  # expanded later, by the inner shell, on purpose
out=$(dry --env "GREETING=a b" 1 prog "two words" "it's" '$HOME' "")
words=()
eval "words=($out)" 2>"$work/eval" || true
n=${#words[@]}
# shellcheck disable=SC2016  # expanded later, by the inner shell, on purpose
if [ "$n" -lt 5 ] || [ "${words[n - 4]}" != "two words" ] || [ "${words[n - 3]}" != "it's" ] || [ "${words[n - 2]}" != '$HOME' ] ||
  [ "${words[n - 1]}" != "" ] || [[ " ${words[*]} " != *" GREETING=a b "* ]]; then
  echo "FAIL [quoting]: $out"
  failures=$((failures + 1))
fi

# Bad input: exit 2 with a message naming the problem.
refuses missing-hostfile "hostfile '$work/none' does not exist" --hostfile "$work/none" 2 prog
refuses non-integer-n "must be a positive integer, got 'two'" two prog
refuses zero-n "must be a positive integer, got '0'" 0 prog
refuses missing-n "missing N" --dry-run
refuses missing-program "missing PROGRAM" 2
refuses too-many "N=5 ranks do not fit 2 node(s)" --hostfile "$work/hosts" --ranks-per-node 2 5 prog
refuses bad-ppr "--ranks-per-node must be a positive integer, got 'x'" --hostfile "$work/hosts" --ranks-per-node x 2 prog
refuses ppr-without-hostfile "--ranks-per-node needs --hostfile or a Slurm allocation" --ranks-per-node 2 2 prog
refuses unset-env "--env NOT_SET_ANYWHERE: NOT_SET_ANYWHERE is not set here" --env NOT_SET_ANYWHERE 2 prog
refuses bad-env "--env needs NAME or NAME=VALUE, got '1X=2'" --env 1X=2 2 prog
refuses unknown-option "unknown option '--hostfle'" --hostfle h 2 prog
refuses mca-arity "--mca needs a KEY and a VALUE" --mca btl
printf '# nothing\n\n' >"$work/empty"
refuses empty-hostfile "names no host" --hostfile "$work/empty" 2 prog
bash "$launch" --help >"$work/help" || { echo "FAIL [help]: exit $?"; failures=$((failures + 1)); }
grep -q "usage: launch/launch.sh \[OPTIONS\] N PROGRAM" "$work/help" || { echo "FAIL [help]: no usage line"; failures=$((failures + 1)); }

# The Slurm example: valid bash, and under a simulated 2-node allocation (mpirun and srun replaced by
# stubs that print their arguments) the launch it makes.
src=$1
bash -n "$src/launch/slurm_example.sbatch" || { echo "FAIL [sbatch]: bash -n"; failures=$((failures + 1)); }
mkdir -p "$work/bin"
# shellcheck disable=SC2016  # the stub expands them when it runs
printf '#!/bin/sh\necho "$(basename "$0") $*"\n' >"$work/bin/mpirun"
cp "$work/bin/mpirun" "$work/bin/srun"
chmod +x "$work/bin/mpirun" "$work/bin/srun"
slurm_env=(PATH="$work/bin:$PATH" HOME="$HOME" SLURM_SUBMIT_DIR="$src" SLURM_JOB_NUM_NODES=2 SLURM_NNODES=2
  "SLURM_NTASKS_PER_NODE=8(x2)" SLURM_CPUS_PER_TASK=12)
out=$(env -i "${slurm_env[@]}" bash "$src/launch/slurm_example.sbatch" 2>&1 | grep '^mpirun' || true)
echo "sbatch: $out"
has sbatch "$out" "--map-by ppr:8:node"
has sbatch "$out" "-x OMP_NUM_THREADS=12"
has sbatch "$out" "-np 16 build/bin/orthotron_pretrain --config configs/gpt_small.yaml"
out=$(env -i "${slurm_env[@]}" ORTHOTRON_LAUNCHER=srun bash "$src/launch/slurm_example.sbatch" 2>&1 | grep -A3 '^srun' || true)
has sbatch-srun "$out" "srun --mpi=pmix"
has sbatch-srun "$out" "build/bin/orthotron_pretrain --config configs/gpt_small.yaml"

# The namespace agent: ssh options before the host are skipped; an unknown host or namespace is
# ssh's exit code 255 with a message naming it. (Runs nothing in a namespace; needs no root.)
agent="$src/launch/netns_agent.sh"
agent_refuses() {
  local name=$1 message=$2
  shift 2
  local rc=0
  env -i PATH="$PATH" ORTHOTRON_NETNS_HOSTS="10.9.9.1=ot-no-such-ns,node-b=ot-no-such-ns-b" bash "$agent" "$@" >"$work/out" 2>&1 || rc=$?
  if [ "$rc" -ne 255 ] || ! grep -qF -- "$message" "$work/out"; then
    echo "FAIL [$name]: expected exit 255 and '$message', got exit $rc: $(cat "$work/out")"
    failures=$((failures + 1))
  fi
}
if command -v ip >/dev/null; then
  agent_refuses agent-ssh-options "namespace 'ot-no-such-ns' for host '10.9.9.1' does not exist" \
    -x -o BatchMode=yes -p22 -l root 10.9.9.1 orted -mca x y
  agent_refuses agent-user-at-host "namespace 'ot-no-such-ns-b' for host 'node-b' does not exist" root@node-b true
  agent_refuses agent-unknown-host "host '10.9.9.2' is not in ORTHOTRON_NETNS_HOSTS" -T 10.9.9.2 true
  agent_refuses agent-no-command "usage: netns_agent.sh" 10.9.9.1
fi

[ "$failures" -eq 0 ] || { echo "launch_dry_run: $failures check(s) failed"; exit 1; }
echo "launch_dry_run: OK"

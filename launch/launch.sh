#!/usr/bin/env bash
# launch/launch.sh: starts an orthotron program on N ranks through Open MPI's mpirun, on this
# machine or on the nodes of a hostfile or a Slurm allocation, with the flags such a run needs: oversubscription when the
# ranks of one host exceed its cores, running as root where that is who you are, the intra-op
# thread count per rank, the environment every rank must see, and the network to use.
# It only builds the mpirun command line; it does not depend on anything else in the checkout.
usage() {
  cat <<'EOF'
usage: launch/launch.sh [OPTIONS] N PROGRAM [ARGS...]

Runs PROGRAM on N ranks with mpirun. Without --hostfile all ranks run on this machine.

options (before N):
  --hostfile FILE        Open MPI hostfile (lines "host slots=K"); ranks go to its nodes
  --ranks-per-node K     K ranks on each node (--map-by ppr:K:node); needs --hostfile or a
                         Slurm allocation (inside sbatch/salloc mpirun takes the nodes from Slurm)
  --env NAME[=VALUE]     pass NAME (set to VALUE if given) to every rank (mpirun -x); repeatable
  --net IFACE            the network for MPI and Open MPI's own traffic: an interface name
                         (eth0, ib0) or a subnet (10.0.0.0/24); sets btl_tcp_if_include and
                         oob_tcp_if_include, and NCCL_SOCKET_IFNAME for an interface name
  --mca KEY VALUE        any other Open MPI MCA parameter; repeatable
  --dry-run              print the mpirun command instead of running it
  -h, --help             this help

Always passed to every rank: OMP_NUM_THREADS (default: cores / ranks per node, at least 1), and
every ORTHOTRON_*, NCCL_*, MASTER_ADDR, MASTER_PORT and LD_LIBRARY_PATH variable that is set.

examples:
  launch/launch.sh 2 build/bin/orthotron_pretrain --config configs/gpt_tiny.yaml
  launch/launch.sh --hostfile hosts --ranks-per-node 8 --net ib0 16 \
      build/bin/orthotron_pretrain --config configs/gpt_small.yaml
EOF
}
set -euo pipefail

fail() {
  echo "launch.sh: $*" >&2
  echo "run 'launch/launch.sh --help' for the usage" >&2
  exit 2
}
need_value() { [ "$2" -ge 2 ] || fail "$1 needs a value"; }
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

hostfile="" ranks_per_node="" net="" dry_run=0
envs=() mcas=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --hostfile) need_value "$1" $#; hostfile=$2; shift 2 ;;
    --ranks-per-node) need_value "$1" $#; ranks_per_node=$2; shift 2 ;;
    --env) need_value "$1" $#; envs+=("$2"); shift 2 ;;
    --net) need_value "$1" $#; net=$2; shift 2 ;;
    --mca)
      [ $# -ge 3 ] || fail "--mca needs a KEY and a VALUE"
      mcas+=(--mca "$2" "$3")
      shift 3
      ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -*) fail "unknown option '$1'" ;;
    *) break ;;
  esac
done

[ $# -ge 1 ] || fail "missing N, the number of ranks"
is_count "$1" || fail "N (the number of ranks) must be a positive integer, got '$1'"
np=$1
shift
[ $# -ge 1 ] || fail "missing PROGRAM after N=$np"
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone would answer OMP_NUM_THREADS

# The nodes: a hostfile's, or the Slurm allocation's (mpirun reads it itself), or this machine.
flags=(--bind-to none)
nodes=0
if [ -n "$hostfile" ]; then
  [ -f "$hostfile" ] || fail "hostfile '$hostfile' does not exist or is not a file"
  # Nodes: the first word of each line that is not blank or a comment.
  nodes=$(sed -e 's/#.*//' "$hostfile" | awk 'NF { print $1 }' | sort -u | wc -l)
  [ "$nodes" -gt 0 ] || fail "hostfile '$hostfile' names no host"
  where="hostfile '$hostfile'"
  flags+=(--hostfile "$hostfile")
elif [ -n "${SLURM_NNODES:-}" ]; then
  is_count "$SLURM_NNODES" || fail "SLURM_NNODES must be a positive integer, got '$SLURM_NNODES'"
  nodes=$SLURM_NNODES
  where="the Slurm allocation"
fi
if [ -n "$ranks_per_node" ]; then
  [ "$nodes" -gt 0 ] ||
    fail "--ranks-per-node needs --hostfile or a Slurm allocation (on one machine all N ranks share it)"
  is_count "$ranks_per_node" || fail "--ranks-per-node must be a positive integer, got '$ranks_per_node'"
  [ "$np" -le $((ranks_per_node * nodes)) ] ||
    fail "N=$np ranks do not fit $nodes node(s) of $where at --ranks-per-node $ranks_per_node (at most $((ranks_per_node * nodes)))"
  flags+=(--map-by "ppr:$ranks_per_node:node")
  per_node=$ranks_per_node
elif [ "$nodes" -gt 0 ]; then
  per_node=$(((np + nodes - 1) / nodes))
else
  per_node=$np
fi
# More ranks on a host than it has cores (this machine's count stands for every node's).
if [ "$per_node" -gt "$cores" ]; then flags+=(--oversubscribe); fi
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  flags+=(--allow-run-as-root)
fi

# The environment of every rank, as NAME (the value here) or NAME=VALUE; the first for a name wins.
forward=()
for e in "${envs[@]}"; do
  name=${e%%=*}
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || fail "--env needs NAME or NAME=VALUE, got '$e'"
  [[ "$e" == *=* ]] || [ -n "${!name+set}" ] || fail "--env $name: $name is not set here (give --env $name=VALUE)"
  forward+=("$e")
done
if [ -n "$net" ]; then
  flags+=(--mca btl_tcp_if_include "$net" --mca oob_tcp_if_include "$net")
  # NCCL's bootstrap takes interface names (a prefix list), not subnets; a value of the caller's wins.
  if [[ ! "$net" =~ / ]] && [ -z "${NCCL_SOCKET_IFNAME:-}" ]; then forward+=("NCCL_SOCKET_IFNAME=$net"); fi
fi
flags+=("${mcas[@]}")
# Ranks share the cores of their node: one share of intra-op threads each unless chosen otherwise.
forward+=("OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((cores / per_node > 0 ? cores / per_node : 1))}")
while IFS= read -r name; do
  forward+=("$name")
done < <(compgen -e | grep -E '^(ORTHOTRON_|NCCL_)|^(MASTER_ADDR|MASTER_PORT|LD_LIBRARY_PATH)$' | sort)
declare -A seen=()
for e in "${forward[@]}"; do
  name=${e%%=*}
  [ -n "${seen[$name]:-}" ] && continue
  seen[$name]=1
  flags+=(-x "$e")
done

cmd=(mpirun "${flags[@]}" -np "$np" "$@")
if [ "$dry_run" -eq 1 ]; then
  # One line a shell can run; words of plain characters stay unquoted for reading.
  line=""
  for w in "${cmd[@]}"; do
    if [[ "$w" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then line+=" $w"; else line+=" $(printf '%q' "$w")"; fi
  done
  echo "${line# }"
  exit 0
fi
exec "${cmd[@]}"

#!/usr/bin/env bash
# launch/launch.sh: starts an orthotron program on N ranks of this machine through Open MPI's
# mpirun, with the flags a single box needs (oversubscription when N exceeds the cores, running as
# root where that is who you are). For several nodes call mpirun yourself with a hostfile.
#   usage: launch/launch.sh N PROGRAM [ARGS...]
#   e.g.   launch/launch.sh 2 build/bin/orthotron_demo --config configs/demo.yaml --steps 200
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: launch/launch.sh N PROGRAM [ARGS...]" >&2
  exit 2
fi
np=$1
shift
flags=(--bind-to none)
[ "$np" -gt "$(nproc)" ] && flags+=(--oversubscribe)
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# One intra-op thread per rank unless the caller chose otherwise: ranks share the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / np > 0 ? $(nproc) / np : 1 ))}"
exec mpirun "${flags[@]}" -np "$np" "$@"

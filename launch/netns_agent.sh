#!/usr/bin/env bash
# launch/netns_agent.sh: a stand-in for ssh that Open MPI's rsh launcher calls to start its daemon
# on a "remote node" that is really a Linux network namespace of this machine. It lets one box run a
# true multi-node job (separate network stacks joined by a veth pair) for tests.
#
#   mpirun --mca plm_rsh_agent /path/to/launch/netns_agent.sh ...
#   Open MPI calls it as ssh:   netns_agent.sh [ssh-options] HOST COMMAND...
#
# HOST (as written in the hostfile) is mapped to a namespace through ORTHOTRON_NETNS_HOSTS, a
# whitespace- or comma-separated list of HOST=NAMESPACE pairs, e.g.
#   ORTHOTRON_NETNS_HOSTS="10.77.0.1=ot-a 10.77.0.2=ot-b"
# The command is one shell command line (Open MPI builds it for a remote shell), so it runs as
# `ip netns exec NAMESPACE bash -c "COMMAND..."`. With ORTHOTRON_NETNS_UTS=1 it also runs in a new
# UTS namespace whose host name is the namespace's name, so each "node" has a host name of its own.
# Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN). Exits 255 (as ssh does) when HOST is unknown.
set -euo pipefail

die() {
  echo "netns_agent.sh: $*" >&2
  exit 255
}

# Skip ssh options: those that take a value consume the next word, the rest are flags.
while [ $# -gt 0 ]; do
  case "$1" in
    -[BbcDEeFIiJLlmOoPpQRSWw])
      [ $# -ge 2 ] || die "ssh option $1 needs a value"
      shift 2
      ;;
    -[BbcDEeFIiJLlmOoPpQRSWw]?*) shift ;;  # option with its value attached, e.g. -p22
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || die "usage: netns_agent.sh [ssh-options] HOST COMMAND... (got $# words after options)"
host=$1
shift

host=${host#*@}  # an ssh-style user@host names the same host
ns=""
for pair in ${ORTHOTRON_NETNS_HOSTS//,/ }; do
  if [ "${pair%%=*}" = "$host" ]; then
    ns=${pair#*=}
    break
  fi
done
[ -n "$ns" ] || die "host '$host' is not in ORTHOTRON_NETNS_HOSTS='${ORTHOTRON_NETNS_HOSTS:-}' (expected HOST=NAMESPACE pairs)"
ip netns list | grep -qE "^$ns( |$)" || die "namespace '$ns' for host '$host' does not exist (ip netns list)"

if [ "${ORTHOTRON_NETNS_UTS:-0}" = "1" ]; then
  # shellcheck disable=SC2016  # expanded later, by the inner shell, on purpose
  exec ip netns exec "$ns" unshare --uts bash -c 'hostname "$0" && eval "$1"' "$ns" "$*"
fi
exec ip netns exec "$ns" bash -c "$*"

#!/usr/bin/env bash
# Run the Kamailio SIP edge of deploy/kamailio/kamailio.cfg in the foreground (issue #20).
#   scripts/kamailio-edge.sh LISTEN RUN_DIR NODE... [-- KAMAILIO_ARGS]
#   LISTEN: IP:PORT the edge listens on (UDP); RUN_DIR: where dispatcher.list and its runtime
#   files go; NODE: IP:PORT of each pbx node. PROBE_INTERVAL (env, seconds, default 2): how
#   often the nodes are probed with OPTIONS. KAMAILIO_SHM_MB (env, default 256): the shared
#   memory pool; Kamailio's own default, 64 MB, runs out (tm "out of mem") at a few hundred
#   forked REGISTERs/s (loadtests/bench_cluster.py).
# It execs kamailio (-DD -E: no daemon, log to stderr), so the caller's $! is kamailio's pid.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
listen="$1"; run="$2"; shift 2
mkdir -p "$run"
list="$run/dispatcher.list"
cp "$ROOT/deploy/kamailio/dispatcher.list.in" "$list"
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    echo "1 sip:$1" >>"$list"
    shift
done
[ "${1:-}" = "--" ] && shift
exec kamailio -f "$ROOT/deploy/kamailio/kamailio.cfg" -DD -E -Y "$run" -m "${KAMAILIO_SHM_MB:-256}" \
    -l "udp:$listen" -A "DISPATCHER_LIST=\"$list\"" -A "PROBE_INTERVAL=${PROBE_INTERVAL:-2}" "$@"

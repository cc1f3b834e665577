#!/usr/bin/env bash
# Run the Kamailio SIP edge of deploy/kamailio/kamailio.cfg in the foreground (issue #20).
#   scripts/kamailio-edge.sh LISTEN RUN_DIR NODE... [-- KAMAILIO_ARGS]
#   LISTEN: IP:PORT the edge listens on (UDP); RUN_DIR: where dispatcher.list and its runtime
#   files go; NODE: IP:PORT of each pbx node. PROBE_INTERVAL (env, seconds, default 2): how
#   often the nodes are probed with OPTIONS.
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
exec kamailio -f "$ROOT/deploy/kamailio/kamailio.cfg" -DD -E -Y "$run" \
    -l "udp:$listen" -A "DISPATCHER_LIST=\"$list\"" -A "PROBE_INTERVAL=${PROBE_INTERVAL:-2}" "$@"

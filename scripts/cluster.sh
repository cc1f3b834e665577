#!/usr/bin/env bash
# A local cluster on loopback for development (issue #20, README "Scaling out"):
#
#   scripts/cluster.sh up [--nodes N] [--rtpengine] [--tenants DIR] [--trunk IP:PORT] [--extra FILE]
#   scripts/cluster.sh down
#
# `up` starts N pbx nodes (default 2) on 127.0.0.11, 127.0.0.12, ... (SIP UDP 5060, admin 8088,
# panel 8089 each), the Kamailio edge on 127.0.0.10:5060 in front of them, and with --rtpengine
# rtpengine (userspace forwarding, ng control on 127.0.0.1:2223) as the nodes' media plane.
# The nodes share one nonce key; each keeps its own SQLite database under the run folder.
# It prints the edge's SIP address and each node's admin address. `down` stops every process
# `up` started, by the pids in the run folder ($PBX_CLUSTER_RUN, default run/cluster).
# --extra FILE: TOML appended to every node's pbx.toml (e.g. [security] for a benchmark).
# Ports: PBX_EDGE_PORT (5060). Probe interval: PROBE_INTERVAL (2 s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${PBX_CLUSTER_RUN:-$ROOT/run/cluster}"
EDGE_IP=127.0.0.10
EDGE_PORT="${PBX_EDGE_PORT:-5060}"
NODE_PORT="${PBX_NODE_PORT:-5060}"
RTPENGINE_NG=127.0.0.1:2223

stop_pid_file() {
    local file="$1" pid
    pid="$(cat "$file" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

down() {
    [ -d "$RUN" ] || { echo "no cluster in $RUN"; return 0; }
    for file in "$RUN"/kamailio.pid "$RUN"/node*.pid "$RUN"/rtpengine.pid; do
        [ -e "$file" ] && stop_pid_file "$file"
    done
    echo "cluster in $RUN stopped"
}

wait_for() {  # wait_for FILE PATTERN PID: until FILE holds PATTERN (or PID is gone)
    for _ in $(seq 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "process $3 ended; see $1" >&2; tail -5 "$1" >&2; return 1; }
        sleep 0.1
    done
    echo "timed out waiting for $2 in $1" >&2
    return 1
}

up() {
    local nodes=2 rtpengine=0 tenants="$ROOT/config/tenants" trunk=127.0.0.2:5080 extra=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --nodes) nodes="$2"; shift 2 ;;
            --rtpengine) rtpengine=1; shift ;;
            --tenants) tenants="$2"; shift 2 ;;
            --trunk) trunk="$2"; shift 2 ;;
            --extra) extra="$2"; shift 2 ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
        esac
    done
    local python="${PBX_PYTHON:-$ROOT/.venv/bin/python}"
    if [ ! -x "$python" ]; then
        source "$ROOT/scripts/_env.sh"
        ensure_venv .
    fi
    command -v kamailio >/dev/null || { source "$ROOT/scripts/_env.sh"; apt_install kamailio; }
    if [ "$rtpengine" = 1 ] && ! command -v rtpengine >/dev/null; then
        source "$ROOT/scripts/_env.sh"; apt_install rtpengine-daemon
    fi
    down >/dev/null
    mkdir -p "$RUN"
    trap 'down' ERR
    head -c 32 /dev/urandom | base64 >"$RUN/nonce.key"
    local media='engine = "builtin"'
    if [ "$rtpengine" = 1 ]; then
        media="engine = \"rtpengine\"
rtpengine = \"udp:$RTPENGINE_NG\"
rtpengine_recording_dir = \"$RUN/rtpengine-rec\""
        mkdir -p "$RUN/rtpengine-rec"
        rtpengine --table=-1 --interface=127.0.0.1 --listen-ng="$RTPENGINE_NG" \
            --port-min=40000 --port-max=44999 --foreground --log-stderr \
            --recording-dir="$RUN/rtpengine-rec" --recording-method=pcap --delete-delay=0 \
            >"$RUN/rtpengine.log" 2>&1 &
        echo $! >"$RUN/rtpengine.pid"
    fi
    local addresses=() i ip dir
    for i in $(seq 1 "$nodes"); do
        ip="127.0.0.$((10 + i))"
        dir="$RUN/node$i"
        mkdir -p "$dir/data"
        rm -rf "$dir/tenants"; cp -r "$tenants" "$dir/tenants"
        cat >"$dir/pbx.toml" <<TOML
[sip]
listen = ["udp:$ip:$NODE_PORT"]
edge = ["$EDGE_IP"]

[auth]
nonce_secret_file = "$RUN/nonce.key"

[admin]
listen = "$ip:8088"

[panel]
listen = "$ip:8089"

[storage]
data_dir = "data"

[media]
rtp_ports = "$((30000 + i * 1000))-$((30999 + i * 1000))"
$media

[[trunks]]
name = "carrier"
address = "$trunk"
TOML
        if [ -n "$extra" ]; then cat "$extra" >>"$dir/pbx.toml"; fi
        (cd "$ROOT" && exec "$python" -m pbx run --config "$dir/pbx.toml" --log-json \
            >"$dir/stdout.log" 2>"$dir/pbx.log") &
        echo $! >"$RUN/node$i.pid"
        addresses+=("$ip:$NODE_PORT")
    done
    for i in $(seq 1 "$nodes"); do
        wait_for "$RUN/node$i/pbx.log" server_started "$(cat "$RUN/node$i.pid")"
    done
    "$ROOT/scripts/kamailio-edge.sh" "$EDGE_IP:$EDGE_PORT" "$RUN/kamailio" "${addresses[@]}" \
        >"$RUN/kamailio.log" 2>&1 &
    echo $! >"$RUN/kamailio.pid"
    wait_for "$RUN/kamailio.log" "SO_RCVBUF is finally" "$(cat "$RUN/kamailio.pid")"
    trap - ERR
    echo "edge: sip:$EDGE_IP:$EDGE_PORT (udp)"
    for i in $(seq 1 "$nodes"); do
        echo "node$i: sip:127.0.0.$((10 + i)):$NODE_PORT admin: http://127.0.0.$((10 + i)):8088 panel: http://127.0.0.$((10 + i)):8089"
    done
    [ "$rtpengine" = 1 ] && echo "rtpengine: ng udp:$RTPENGINE_NG"
    echo "run folder: $RUN (scripts/cluster.sh down stops it)"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    *) echo "usage: $0 up [--nodes N] [--rtpengine] [--tenants DIR] [--trunk IP:PORT] [--extra FILE] | down" >&2; exit 2 ;;
esac

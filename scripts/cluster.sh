#!/usr/bin/env bash
# A local cluster on loopback for development (issue #20, README "Scaling out"):
#
#   scripts/cluster.sh up [--nodes N] [--rtpengine] [--tenants DIR] [--trunk IP:PORT] [--extra FILE]
#   scripts/cluster.sh start-node N
#   scripts/cluster.sh down
#
# `up` starts a private PostgreSQL (pbx.pg_local: a Unix socket in its own folder under /tmp, no
# TCP port), N pbx nodes (default 2) on 127.0.0.11, 127.0.0.12, ... (SIP UDP 5060, admin 8088,
# panel 8089 each), the Kamailio edge on 127.0.0.10:5060 in front of them, and with --rtpengine
# rtpengine (userspace forwarding, ng control on 127.0.0.1:2223) as the nodes' media plane.
# The nodes share one nonce key and one database ([storage] database, each its own
# [storage] node = "nodeN"): bindings, call records and the panel's tables are in PostgreSQL.
# It prints the edge's SIP address, each node's admin address and the database URL.
# `start-node N` starts node N again (after a kill; its previous log is kept as pbx.log.1).
# `down` stops every process `up` started, by the pids in the run folder ($PBX_CLUSTER_RUN,
# default run/cluster), PostgreSQL last, and removes PostgreSQL's folder.
# Ports: PBX_EDGE_PORT (5060), PBX_NODE_PORT (5060), PBX_ADMIN_PORT (8088), PBX_PANEL_PORT (8089),
# PBX_RTP_BASE (30000: node i relays on BASE + i*1000 .. +999). Probe interval: PROBE_INTERVAL (2 s).
# --extra FILE: TOML appended to every node's pbx.toml (e.g. [security] for a benchmark).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${PBX_CLUSTER_RUN:-$ROOT/run/cluster}"
EDGE_IP=127.0.0.10
EDGE_PORT="${PBX_EDGE_PORT:-5060}"
NODE_PORT="${PBX_NODE_PORT:-5060}"
ADMIN_PORT="${PBX_ADMIN_PORT:-8088}"
PANEL_PORT="${PBX_PANEL_PORT:-8089}"
RTP_BASE="${PBX_RTP_BASE:-30000}"
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

stop_postgres() {  # SIGINT: PostgreSQL's fast shutdown; then its throw-away folder goes
    local pid root
    pid="$(cat "$RUN/postgres.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    root="$(cat "$RUN/postgres.root" 2>/dev/null || true)"
    case "$root" in
        /tmp/pbx-pg-*) rm -rf "$root" ;;
    esac
    rm -f "$RUN/postgres.pid" "$RUN/postgres.root" "$RUN/postgres.url"
}

down() {
    [ -d "$RUN" ] || { echo "no cluster in $RUN"; return 0; }
    local file pid
    # SIGTERM to all at once (each node drains on its own), then wait for each, SIGKILL if it lingers.
    for file in "$RUN"/kamailio.pid "$RUN"/node*.pid "$RUN"/rtpengine.pid; do
        pid="$(cat "$file" 2>/dev/null || true)"
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done
    for file in "$RUN"/kamailio.pid "$RUN"/node*.pid "$RUN"/rtpengine.pid; do
        [ -e "$file" ] && stop_pid_file "$file"
    done
    stop_postgres
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

start_node() {  # start_node I PYTHON: node I in the background, its pid in the run folder
    local dir="$RUN/node$1"
    (cd "$ROOT" && exec "$2" -m pbx run --config "$dir/pbx.toml" --log-json \
        >"$dir/stdout.log" 2>"$dir/pbx.log") &
    echo $! >"$RUN/node$1.pid"
}

restart_node() {  # start-node N: node N again, on the config `up` wrote (after a kill -9)
    local i="$1" dir="$RUN/node$1"
    [ -f "$dir/pbx.toml" ] || { echo "no node$i in $RUN" >&2; exit 2; }
    [ -e "$RUN/node$i.pid" ] && stop_pid_file "$RUN/node$i.pid"
    [ -e "$dir/pbx.log" ] && mv "$dir/pbx.log" "$dir/pbx.log.1"
    start_node "$i" "$(cat "$RUN/python")"
    wait_for "$dir/pbx.log" server_started "$(cat "$RUN/node$i.pid")"
    echo "node$i started again (pid $(cat "$RUN/node$i.pid"))"
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
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
        || { source "$ROOT/scripts/_env.sh"; apt_install postgresql; }
    if [ "$rtpengine" = 1 ] && ! command -v rtpengine >/dev/null; then
        source "$ROOT/scripts/_env.sh"; apt_install rtpengine-daemon
    fi
    down >/dev/null
    mkdir -p "$RUN"
    trap 'down' ERR
    head -c 32 /dev/urandom | base64 >"$RUN/nonce.key"
    local database
    database="$(cd "$ROOT" && "$python" -m pbx.pg_local start "$RUN")"
    echo "$python" >"$RUN/python"
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
listen = "$ip:$ADMIN_PORT"

[panel]
listen = "$ip:$PANEL_PORT"

[storage]
data_dir = "data"
database = "$database"
node = "node$i"

[media]
rtp_ports = "$((RTP_BASE + i * 1000))-$((RTP_BASE + 999 + i * 1000))"
$media

[[trunks]]
name = "carrier"
address = "$trunk"
TOML
        if [ -n "$extra" ]; then cat "$extra" >>"$dir/pbx.toml"; fi
        start_node "$i" "$python"
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
        echo "node$i: sip:127.0.0.$((10 + i)):$NODE_PORT admin: http://127.0.0.$((10 + i)):$ADMIN_PORT panel: http://127.0.0.$((10 + i)):$PANEL_PORT"
    done
    echo "database: $database"
    [ "$rtpengine" = 1 ] && echo "rtpengine: ng udp:$RTPENGINE_NG"
    echo "run folder: $RUN (scripts/cluster.sh down stops it)"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    start-node) [ "$#" = 2 ] || { echo "usage: $0 start-node N" >&2; exit 2; }; restart_node "$2" ;;
    down) down ;;
    *) echo "usage: $0 up [--nodes N] [--rtpengine] [--tenants DIR] [--trunk IP:PORT] [--extra FILE] | start-node N | down" >&2; exit 2 ;;
esac

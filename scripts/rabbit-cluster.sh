#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, from the installed (Debian) rabbitmq-server, for the
# cluster tests and for trying Parley against a cluster on one machine. It never touches the
# system node (rabbit@localhost on 5672): its nodes have their own names, ports, data directory,
# config, plugins file and Erlang cookie.
#
#   scripts/rabbit-cluster.sh start          start the three nodes in parallel, cluster them, wait
#                                            until all three are running members, print the URL
#   scripts/rabbit-cluster.sh stop           SIGKILL-free stop of every node, then remove the data
#   scripts/rabbit-cluster.sh status         the cluster as node 1 (or the first live node) sees it
#   scripts/rabbit-cluster.sh url            the multi-host AMQP URL (PARLEY_AMQP_URL)
#   scripts/rabbit-cluster.sh kill N         SIGKILL node N (1-3): a crash, nothing is flushed
#   scripts/rabbit-cluster.sh start-node N   restart node N after a kill and wait until it is running
#   scripts/rabbit-cluster.sh ctl N ARGS...  rabbitmqctl ARGS on node N (e.g. ctl 1 list_connections node)
#
# Options (or environment): --dir DIR (PARLEY_CLUSTER_DIR, default /tmp/parley-rabbit-cluster),
# --port P (PARLEY_CLUSTER_PORT, default 5701): node N listens for AMQP on 127.0.0.1:P+N-1 and for
# Erlang distribution on P+N-1+20000; its name is parley-<amqp port>@localhost.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

DIR=${PARLEY_CLUSTER_DIR:-/tmp/parley-rabbit-cluster}
PORT=${PARLEY_CLUSTER_PORT:-5701}
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        --port) PORT=${2:?--port needs a port number}; shift 2 ;;
        --port=*) PORT=${1#--port=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
case "$PORT" in ''|*[!0-9]*) echo "rabbit-cluster: --port must be a number, got '$PORT'" >&2; exit 2 ;; esac
if [ "$PORT" -lt 1024 ] || [ "$PORT" -gt 45000 ]; then
    echo "rabbit-cluster: --port must be between 1024 and 45000 (distribution ports are P+20000), got $PORT" >&2
    exit 2
fi

SBIN=/usr/lib/rabbitmq/bin
if [ ! -x "$SBIN/rabbitmq-server" ]; then
    SBIN=$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /nonexistent/x)")
fi
if [ ! -x "$SBIN/rabbitmq-server" ] || [ ! -x "$SBIN/rabbitmqctl" ]; then
    echo "rabbit-cluster: rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)" >&2
    exit 3
fi

NODES=(1 2 3)
port_of() { echo $((PORT + $1 - 1)); }
name_of() { echo "parley-$(port_of "$1")@localhost"; }
ndir() { echo "$DIR/n$1"; }

check_n() {
    case "${1:-}" in 1|2|3) ;; *) echo "rabbit-cluster: node number must be 1, 2 or 3, got '${1:-}'" >&2; exit 2 ;; esac
}

# The environment of node N's server and of any CLI call that talks to it (same cookie through HOME).
node_env() {
    local n=$1 d
    d=$(ndir "$n")
    export HOME="$DIR" \
        RABBITMQ_NODENAME="$(name_of "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(port_of "$n")" \
        RABBITMQ_DIST_PORT=$(($(port_of "$n") + 20000)) \
        RABBITMQ_MNESIA_BASE="$d/mnesia" \
        RABBITMQ_LOG_BASE="$d/log" \
        RABBITMQ_PID_FILE="$d/pid" \
        RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        ERL_CRASH_DUMP="$d/erl_crash.dump"
}

ctl() {  # node number, rabbitmqctl arguments...
    local n=$1; shift
    ( node_env "$n"; "$SBIN/rabbitmqctl" -q -n "$(name_of "$n")" "$@" )
}

prepare() {
    mkdir -p "$DIR"
    if [ ! -f "$DIR/.erlang.cookie" ]; then
        ( umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$DIR/.erlang.cookie" )
        chmod 400 "$DIR/.erlang.cookie"
    fi
    cat >"$DIR/rabbitmq.conf" <<EOF
# written by scripts/rabbit-cluster.sh (listener address and port come from the environment)
loopback_users.guest = true
cluster_partition_handling = pause_minority
log.console = false
log.file.level = info
EOF
    echo "[]." >"$DIR/advanced.config"
    echo "[]." >"$DIR/enabled_plugins"   # no management plugin: the tests use rabbitmqctl
    : >"$DIR/rabbitmq-env.conf"          # not the system's /etc/rabbitmq/rabbitmq-env.conf
    for n in "${NODES[@]}"; do mkdir -p "$(ndir "$n")/log"; done
}

alive() {  # node number: its beam process exists
    local pid
    pid=$(cat "$(ndir "$1")/pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

launch() {  # node number: start the server detached from this shell, output to its log dir
    local n=$1
    if alive "$n"; then echo "rabbit-cluster: node $n ($(name_of "$n")) is already running" >&2; return 0; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$(port_of "$n")") 2>/dev/null; then
        echo "rabbit-cluster: port $(port_of "$n") is taken by something else; choose another --port" >&2
        return 1
    fi
    rm -f "$(ndir "$n")/pid"
    ( node_env "$n"; setsid nohup "$SBIN/rabbitmq-server" >>"$(ndir "$n")/log/stdout.log" 2>&1 </dev/null & )
}

wait_node() {  # node number: until the node's app runs (its pid file appears first)
    local n=$1
    for _ in $(seq 1 300); do [ -s "$(ndir "$n")/pid" ] && break; sleep 0.2; done
    if ! ctl "$n" wait --timeout 90 "$(ndir "$n")/pid" >/dev/null 2>&1; then
        echo "rabbit-cluster: node $n ($(name_of "$n")) did not start; its log: $(ndir "$n")/log" >&2
        tail -n 20 "$(ndir "$n")/log/stdout.log" >&2 || true
        return 1
    fi
}

running_members() {  # node number: the running nodes it sees, one per line
    ctl "$1" eval 'rabbit_nodes:all_running().' 2>/dev/null | tr -d "[]' " | tr ',' '\n' | sed '/^$/d'
}

url() {
    local hosts=() n
    for n in "${NODES[@]}"; do hosts+=("127.0.0.1:$(port_of "$n")"); done
    local IFS=,
    echo "amqp://guest:guest@${hosts[*]}/"
}

start() {
    prepare
    local n pids=()
    for n in "${NODES[@]}"; do launch "$n"; done
    for n in "${NODES[@]}"; do wait_node "$n" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || { echo "rabbit-cluster: start failed; 'stop' cleans up" >&2; exit 1; }; done
    local first
    first=$(name_of 1)
    pids=()
    for n in 2 3; do  # both join node 1 at once
        if ! running_members "$n" | grep -qx "$first"; then
            # the CLI prints the joining node's transient "node_not_running" errors: kept in its log
            ( ctl "$n" stop_app && ctl "$n" join_cluster "$first" && ctl "$n" start_app ) >>"$(ndir "$n")/log/join.log" 2>&1 &
            pids+=($!)
        fi
    done
    for p in "${pids[@]}"; do
        wait "$p" || { echo "rabbit-cluster: joining the cluster failed (see $DIR/n*/log/join.log); 'stop' cleans up" >&2; exit 1; }
    done
    for _ in $(seq 1 100); do
        [ "$(running_members 1 | wc -l)" -eq 3 ] && { url; return 0; }
        sleep 0.3
    done
    echo "rabbit-cluster: the three nodes did not become running members of one cluster:" >&2
    ctl 1 cluster_status >&2 || true
    exit 1
}

stop() {
    local n pid
    for n in "${NODES[@]}"; do
        if alive "$n"; then ctl "$n" stop >/dev/null 2>&1 || true; fi
    done
    for n in "${NODES[@]}"; do  # whatever did not stop within 10 s is killed
        pid=$(cat "$(ndir "$n")/pid" 2>/dev/null || true)
        for _ in $(seq 1 50); do alive "$n" || break; sleep 0.2; done
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    case "$DIR" in /|"") echo "rabbit-cluster: refusing to remove '$DIR'" >&2; exit 2 ;; esac
    if [ -f "$DIR/.erlang.cookie" ] || [ -d "$DIR/n1" ]; then rm -rf "$DIR"; fi
}

status() {
    local n
    for n in "${NODES[@]}"; do
        if alive "$n"; then
            echo "running members seen by $(name_of "$n"):"
            running_members "$n" | sed 's/^/  /'
            return 0
        fi
    done
    echo "rabbit-cluster: no node of the cluster in $DIR (port $PORT) is running" >&2
    return 1
}

kill_node() {
    check_n "$1"
    local pid
    pid=$(cat "$(ndir "$1")/pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "rabbit-cluster: node $1 ($(name_of "$1")) is not running" >&2; exit 1
    fi
    kill -9 "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "killed $(name_of "$1") (pid $pid)"
}

start_node() {
    check_n "$1"
    launch "$1"
    wait_node "$1"
    echo "started $(name_of "$1") on 127.0.0.1:$(port_of "$1")"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) url ;;
    kill) kill_node "${2:-}" ;;
    start-node) start_node "${2:-}" ;;
    ctl) check_n "${2:-}"; n=$2; shift 2; ctl "$n" "$@" ;;
    ""|help) usage; [ -n "${1:-}" ] ;;
    *) echo "rabbit-cluster: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac

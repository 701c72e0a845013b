#!/usr/bin/env bash
# Make sure the services Parley's tests (and its multi-process mode) use are running:
# PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672. Starts them when installed but
# stopped; installs them from Debian's packages when missing and we are root.
#   scripts/services.sh            both
#   scripts/services.sh rabbitmq   only RabbitMQ
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port, name, seconds
    for _ in $(seq 1 "$3"); do port_open "$1" && return 0; sleep 1; done
    echo "services: $2 did not start listening on 127.0.0.1:$1" >&2
    return 1
}

apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "services: $* is not installed; install it (e.g. sudo apt-get install $*) and retry" >&2
        exit 1
    fi
    echo "services: installing $* from Debian packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
    port_open 5432 && return 0
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        apt_install postgresql
        local hba
        hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
        # Tests connect over TCP without a password, as on the CI machines (trust on loopback only).
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    echo "services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
    wait_port 5432 PostgreSQL 60
}

ensure_rabbitmq() {
    port_open 5672 && return 0
    command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
    echo "services: starting RabbitMQ" >&2
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 5672 RabbitMQ 120
}

case "${1:-all}" in
    postgres) ensure_postgres ;;
    rabbitmq) ensure_rabbitmq ;;
    all) ensure_postgres; ensure_rabbitmq ;;
    *) echo "usage: $0 [all|postgres|rabbitmq]" >&2; exit 2 ;;
esac

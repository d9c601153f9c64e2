#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the PostgreSQL storage
# backend (scripts/test.sh runs it; Debian's `postgresql` package, installed
# by `setup.sh --test`, provides the programs).
#
#   eval "$(scripts/test-postgres.sh start DIR)"   # exports the settings
#   scripts/test-postgres.sh stop DIR
#
# The server keeps its files in DIR and trusts local connections. It listens
# on a Unix socket in DIR (TEST_POSTGRES: `host=DIR port=P
# user=postgres`) and, for the TLS tests, on a free loopback port with a
# certificate for `localhost` from a certificate authority made for the run
# (TEST_POSTGRES_TLS: `host=localhost port=P user=postgres`,
# TEST_POSTGRES_CA: that authority's PEM file). Started as root, it
# runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

cmd=${1:?usage: test-postgres.sh start|stop DIR}
dir=${2:?usage: test-postgres.sh start|stop DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "test-postgres: no PostgreSQL server programs (apt-get install postgresql)" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # A certificate authority for this run and a server certificate for
    # localhost signed by it.
    tls="$dir/tls"
    if [ ! -f "$tls/server.crt" ]; then
      mkdir -p "$tls"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=huashen test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
      printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$tls/ext.cnf"
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3 -extfile "$tls/ext.cnf" -out "$tls/server.crt" 2>/dev/null
      chmod 600 "$tls/server.key"
      [ "$(id -u)" -eq 0 ] && chown -R postgres: "$tls"
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Tests open many short-lived databases side by side; fsync off keeps
    # that fast (the data is thrown away).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' \
          -c ssl=on -c ssl_cert_file='$tls/server.crt' -c ssl_key_file='$tls/server.key' \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "export TEST_POSTGRES='host=$dir port=$port user=postgres'"
    echo "export TEST_POSTGRES_TLS='host=localhost port=$port user=postgres'"
    echo "export TEST_POSTGRES_CA='$tls/ca.crt'"
    ;;
  stop)
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: test-postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac

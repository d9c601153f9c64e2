#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the PostgreSQL storage
# backend (scripts/test.sh runs it; Debian's `postgresql` package, installed
# by `setup.sh --test`, provides the programs).
#
#   scripts/test-postgres.sh start DIR   # prints the connection settings
#   scripts/test-postgres.sh stop DIR
#
# The server keeps its files in DIR, listens on a Unix socket in DIR (no TCP
# port, so nothing else on the machine can reach it or clash with it) and
# trusts local connections. Started as root, it runs as the `postgres` user
# (PostgreSQL refuses to run as root). `start` prints the settings the tests
# read from HUASHEN_TEST_POSTGRES: `host=DIR port=5432 user=postgres`.
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
    # Tests open many short-lived databases side by side; fsync off keeps
    # that fast (the data is thrown away).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off \
          -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "host=$dir port=5432 user=postgres"
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

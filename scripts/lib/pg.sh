# A throwaway PostgreSQL cluster on loopback for the portability suite: pg_start exports IAT_TEST_PG_DSN,
# pg_stop removes the cluster. PostgreSQL refuses to run as root, so as root it runs as the 'postgres' user.
pg_start() {
  local bin port as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "PostgreSQL server binaries not found" >&2; return 1; }
  IAT_PG_DIR=$(mktemp -d /tmp/iat-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres: "$IAT_PG_DIR"; as=(runuser -u postgres --); fi
  port=$("$IAT_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${as[@]}" "$bin/initdb" -D "$IAT_PG_DIR/data" -A trust -U postgres -E UTF8 --no-sync >"$IAT_PG_DIR/initdb.log" 2>&1 \
    || { cat "$IAT_PG_DIR/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$IAT_PG_DIR/data" -l "$IAT_PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $IAT_PG_DIR -c fsync=off -c full_page_writes=off" >/dev/null \
    || { cat "$IAT_PG_DIR/server.log" >&2; return 1; }
  IAT_PG_BIN=$bin
  export IAT_TEST_PG_DSN="postgresql://postgres@127.0.0.1:$port/postgres"
}

pg_stop() {
  [ -n "${IAT_PG_DIR:-}" ] || return 0
  local as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$IAT_PG_BIN/pg_ctl" -D "$IAT_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$IAT_PG_DIR"
}

# A throwaway S3 API server on loopback for the sync tests: moto's standalone server (moto[server], a test extra).
# s3_start exports IAT_TEST_S3_ENDPOINT and test-only AWS credentials (moto accepts any); s3_stop ends the server.
# Its state lives in memory only, so stopping it leaves nothing behind.
s3_start() {
  local port i
  IAT_S3_DIR=$(mktemp -d /tmp/iat-s3.XXXXXX)
  port=$("$IAT_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$(dirname "$IAT_PY")/moto_server" -H 127.0.0.1 -p "$port" >"$IAT_S3_DIR/server.log" 2>&1 &
  IAT_S3_PID=$!
  for i in $(seq 1 150); do
    if "$IAT_PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" \
        2>/dev/null; then
      export IAT_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
      # Only for the test processes: fixed fake keys so that no test ever reaches a real account's credentials.
      export AWS_ACCESS_KEY_ID=iat-test AWS_SECRET_ACCESS_KEY=iat-test-secret AWS_DEFAULT_REGION=us-east-1
      return 0
    fi
    kill -0 "$IAT_S3_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "moto_server did not start:" >&2
  cat "$IAT_S3_DIR/server.log" >&2
  s3_stop
  return 1
}

s3_stop() {
  if [ -n "${IAT_S3_PID:-}" ]; then
    kill "$IAT_S3_PID" 2>/dev/null || true
    wait "$IAT_S3_PID" 2>/dev/null || true
    IAT_S3_PID=
  fi
  [ -n "${IAT_S3_DIR:-}" ] && rm -rf "$IAT_S3_DIR"
  IAT_S3_DIR=
}

# Shared by the benchmark scripts (sourced, not run).

# CPU ticks (user + system) of a process and its children (nginx's worker is the master's
# child), from /proc.
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Writes DIR/nginx.conf: one worker, no access log, keep-alive without limit, listening on
# 127.0.0.1:PORT. With UPSTREAM_PORT, /rest/ is proxied to 127.0.0.1:UPSTREAM_PORT (HTTP/1.1,
# upstream keep-alive, the prefix stripped); without, every path answers a short text.
#   nginx_conf DIR PORT [UPSTREAM_PORT]
nginx_conf() {
  local dir=$1 port=$2 upstream=${3:-} upstream_block="" location
  if [ -n "$upstream" ]; then
    upstream_block="upstream mock { server 127.0.0.1:$upstream; keepalive 64; }"
    location='location /rest/ { proxy_pass http://mock/; proxy_http_version 1.1; proxy_set_header Connection ""; }'
  else
    location="location / { return 200 'hello from nginx\n'; }"
  fi
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  $upstream_block
  server {
    listen 127.0.0.1:$port;
    $location
  }
}
CONF
}

# Stops what start_stack (and the caller) started: every PID in `pids`; removes $work.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# Starts the mocks and the gateway ($GW, one thread each) on free ports, pinned to CPU 0 when
# there are 2+ cores; sets work, pids, srv and gen (the pinning prefixes for servers and the
# generator), rest, grpc, gwp and gw_pid, and stops everything on exit.
start_stack() {
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
  srv="taskset -c 0"; gen="taskset -c 1"
  [ "$(nproc)" -ge 2 ] || { srv=""; gen=""; }
  local adm
  rest=$(free_port); grpc=$(free_port); adm=$(free_port); gwp=$(free_port); gwa=$(free_port)
  $srv "$GW" backends --rest-port "$rest" --grpc-port "$grpc" --admin-port "$adm" --threads 1 \
    > "$work/b.out" 2>&1 &
  pids+=($!)
  # GW_ARGS: more flags for this gateway (e.g. --http1 hyper).
  $srv "$GW" gateway --listen "127.0.0.1:$gwp" --admin "127.0.0.1:$gwa" --threads 1 \
    --upstream-grpc "127.0.0.1:$grpc" --upstream-rest "127.0.0.1:$rest" ${GW_ARGS:-} > "$work/g.out" 2>&1 &
  gw_pid=$!
  pids+=($gw_pid)
  for _ in $(seq 100); do grep -q "ready admin" "$work/g.out" 2>/dev/null && break; sleep 0.1; done
}

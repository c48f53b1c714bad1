#!/usr/bin/env bash
# serve_nginx.sh: two `lfm2 serve` replicas behind nginx on loopback, routed by session key with
# consistent hashing (docs/deployment.md "Several replicas"). nginx runs docker/nginx.conf as
# shipped (njs key: X-Session-Id, else the body's "user") and, on a second port, the njs-free
# `map` variant exactly as docs/deployment.md prints it. serve_nginx.mjs (OpenAI SDK) checks:
# turns 2+ of a chat report cached tokens, a key always reaches the same replica, different keys
# reach both, the header wins over "user", keyless requests are spread; the replicas' own
# prompt-token counters confirm which replica answered. Then one replica stops: its sessions
# move to the other, the other's stay. nginx (Debian nginx + libnginx-mod-http-js) comes from
# `make e2e-deps`, or apt here; the test skips only when it cannot be installed.
. "$(dirname "$0")/serve_common.inc"
T=$TMPDIR
ROOT=$(cd "$E2E_DIR/../.." && pwd)
NGINX_MOD=/usr/lib/nginx/modules/ngx_http_js_module.so
nginx_bin() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }; }
if [ -z "$(nginx_bin)" ] || [ ! -f "$NGINX_MOD" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx libnginx-mod-http-js; } >"$T/apt.log" 2>&1
  if [ -z "$(nginx_bin)" ] || [ ! -f "$NGINX_MOD" ]; then
    tail -n 5 "$T/apt.log"
    echo "SKIP: nginx and libnginx-mod-http-js are not installed and apt-get cannot install them"
    exit 0
  fi
fi
NGINX=$(nginx_bin)

make_model
start_server replica-a --ctx 2048 --parallel 2; PID_A=$PID; PORT_A=$PORT; BASE_A=$BASE; LOG_A=$LOG
start_server replica-b --ctx 2048 --parallel 2; PID_B=$PID; PORT_B=$PORT; BASE_B=$BASE; LOG_B=$LOG

# Free loopback ports for nginx's two servers: the kernel picks them, nginx binds them moments
# later (start_nginx picks again if another process took one in between).
free_ports() {
  read -r PORT_N PORT_M < <(node -e '
    const net = require("net"); const ps = [];
    const one = () => new Promise(r => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { ps.push(s.address().port); s.close(r); }); });
    (async () => { await one(); await one(); console.log(ps.join(" ")); })();')
}
free_ports

# docker/nginx.conf with the compose names and paths replaced by loopback ones; each replacement
# must hit, so the test fails when the shipped file changes shape.
sub() { # sub FILE FROM TO
  grep -qF -- "$2" "$1" || fail "docker/nginx.conf no longer contains '$2'"
  FROM=$2 TO=$3 perl -0pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/g' "$1"
}
CONF=$T/nginx.conf
cp "$ROOT/docker/nginx.conf" "$CONF"
sub "$CONF" "server lfm2-a:8080" "server 127.0.0.1:$PORT_A"
sub "$CONF" "server lfm2-b:8080" "server 127.0.0.1:$PORT_B"
sub "$CONF" "listen 8080;" "listen 127.0.0.1:$PORT_N;"
sub "$CONF" "/etc/nginx/nginx-session.js" "$ROOT/docker/nginx-session.js"
sub "$CONF" "access_log /dev/stdout;" "access_log $T/nginx-access.log;
    client_body_temp_path $T/nginx-body; proxy_temp_path $T/nginx-proxy;
    fastcgi_temp_path $T/nginx-fastcgi; uwsgi_temp_path $T/nginx-uwsgi; scgi_temp_path $T/nginx-scgi;
    include $T/nginx-map.conf;"

# The map variant: the nginx block of docs/deployment.md after the marker comment, upstream
# renamed, servers replaced, and a server block like the shipped one in front of it.
awk '/^<!-- tests\/e2e\/serve_nginx.sh runs the block below/ {m=1; next}
     m==1 && /^```nginx/ {m=2; next} m==2 && /^```/ {exit} m==2 {print}' \
  "$ROOT/docs/deployment.md" >"$T/nginx-map.conf"
[ -s "$T/nginx-map.conf" ] || fail "no marked nginx block in docs/deployment.md"
sub "$T/nginx-map.conf" "upstream lfm2 {" "upstream lfm2_map {"
sub "$T/nginx-map.conf" "server 10.0.0.11:8080" "server 127.0.0.1:$PORT_A"
sub "$T/nginx-map.conf" "server 10.0.0.12:8080" "server 127.0.0.1:$PORT_B"
cat >>"$T/nginx-map.conf" <<CONF
server {
    listen 127.0.0.1:$PORT_M;
    location / {
        proxy_pass http://lfm2_map;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host localhost;
        proxy_buffering off;
        add_header X-Lfm2-Replica \$upstream_addr always;
    }
}
CONF

# nginx's master stops its workers on SIGTERM; a master killed outright would leave them
# listening, so on any exit each master gets SIGTERM first, and its children SIGKILL if it lingers.
NGINX_PIDS=()
nginx_down() {
  local p
  for p in "${NGINX_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  local alive
  for _ in $(seq 1 60); do
    alive=0
    for p in "${NGINX_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.05
  done
  for p in "${NGINX_PIDS[@]}"; do pkill -KILL -P "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  return 0
}
trap 'nginx_down; e2e_cleanup' EXIT

# Own prefix, pid and logs; the workers run as the current user (a root master would switch to
# nobody, who cannot enter the test's private folder).
start_nginx() {
  local try
  for try in 1 2 3; do
    : >"$T/nginx-error.log"
    "$NGINX" -p "$T/" -c "$CONF" -e "$T/nginx-error.log" \
      -g "daemon off; pid $T/nginx.pid; user $(id -un) $(id -gn);" >>"$T/nginx-error.log" 2>&1 &
    NGINX_PID=$!
    NGINX_PIDS+=("$NGINX_PID")
    for _ in $(seq 1 100); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_N/health")" = 200 ] &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_M/health")" = 200 ] && return 0
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -0 "$NGINX_PID" 2>/dev/null && break
    grep -q "Address already in use" "$T/nginx-error.log" || break
    local old_n=$PORT_N old_m=$PORT_M
    free_ports
    echo "port $old_n or $old_m was taken before nginx bound it: now $PORT_N and $PORT_M"
    perl -pi -e "s/listen 127\\.0\\.0\\.1:$old_n;/listen 127.0.0.1:$PORT_N;/; s/listen 127\\.0\\.0\\.1:$old_m;/listen 127.0.0.1:$PORT_M;/" \
      "$CONF" "$T/nginx-map.conf"
  done
  cat "$T/nginx-error.log" >&2; fail "nginx not answering /health through both servers"
}
"$NGINX" -t -p "$T/" -c "$CONF" -e "$T/nginx-error.log" -g "pid $T/nginx.pid;" >"$T/nginx-t.log" 2>&1 ||
  { cat "$T/nginx-t.log" >&2; fail "nginx -t rejects the configuration"; }
start_nginx
ok "nginx $("$NGINX" -v 2>&1 | sed 's|.*/||') in front of replicas :$PORT_A and :$PORT_B (njs :$PORT_N, map :$PORT_M)"

export NJS=http://127.0.0.1:$PORT_N MAP=http://127.0.0.1:$PORT_M A=127.0.0.1:$PORT_A B=127.0.0.1:$PORT_B
export BASE_A BASE_B STATE=$T/keys.json
LOG=$LOG_A
node "$E2E_DIR/serve_nginx.mjs" routes || fail "routing through nginx (replica-b log: $LOG_B)"

# Replica B goes away: its sessions move to A (nginx marks B failed), A's sessions stay on A.
stop_server "$PID_B" || fail "replica b did not drain and exit 0"
node "$E2E_DIR/serve_nginx.mjs" failover || fail "failover to the remaining replica"
kill -TERM "$NGINX_PID"; wait_exit "$NGINX_PID" 10

#!/usr/bin/env bash
# image.sh: builds docker/Dockerfile (docker/build-image.sh, podman) and runs the image's own
# entrypoint in the image's read-only root filesystem as a container would: tini as PID 1 of a new
# PID namespace, the image's user and ENV only (plus overrides), the model directory bind-mounted
# read-only at /models. Checks /health 503 then 200, the image's HEALTHCHECK, a chat, a streamed
# chat, LFM2_HOST/LFM2_PORT/LFM2_MODEL, a SIGTERM drain with a stream in flight (exit 0), that the
# runtime stage has no compiler and no headers, and prints the image size.
# Needs root (podman build --isolation chroot, mounts, namespaces); fails when it cannot build.
. "$(dirname "$0")/serve_common.inc"
T=$TMPDIR
ROOT=$(cd "$E2E_DIR/../.." && pwd)
[ "$(id -u)" = 0 ] || fail "image.sh needs root (podman build, mount, unshare)"

IID=""; MNT=""; RUN_PIDS=()
image_cleanup() {
  # Killing a PID namespace's PID 1 kills every process in it, and the last one gone takes the
  # namespace's mounts along. (unshare's --kill-child alone does not do it: the parent-death
  # signal is cleared when chroot --userspec changes the credentials.)
  local p c
  for p in "${RUN_PIDS[@]}"; do
    c=$(cat "/proc/$p/task/$p/children" 2>/dev/null)
    [ -n "$c" ] && kill -9 $c 2>/dev/null
    kill -9 "$p" 2>/dev/null
  done
  for p in "${RUN_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$MNT" ] && podman image unmount "$IID" >/dev/null 2>&1
  e2e_cleanup
}
trap image_cleanup EXIT

# 1. build (layers are cached: a rebuild without source changes takes seconds)
t0=$SECONDS
"$ROOT/docker/build-image.sh" --iidfile "$T/iid" >"$T/build.log" 2>&1 ||
  { tail -n 30 "$T/build.log" >&2; fail "docker/build-image.sh could not build the image (log above)"; }
IID=$(cat "$T/iid")
ok "image $IID built in $((SECONDS - t0)) s"
size=$(podman image inspect --format '{{.Size}}' "$IID")
echo "image size: $((size / 1000000)) MB"
[ "$size" -lt 300000000 ] || fail "image is $((size / 1000000)) MB, over 300 MB"

# The image's own configuration: what `docker run` would start, as whom, with which environment.
cfg() { podman image inspect --format "$1" "$IID"; }
USER_SPEC=$(cfg '{{.Config.User}}')
mapfile -t ENTRY < <(cfg '{{range .Config.Entrypoint}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t ENVS < <(cfg '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
expect_eq "image user" "$USER_SPEC" "lfm2:lfm2"
expect_eq "entrypoint" "${ENTRY[*]}" "/usr/bin/tini -- /usr/local/bin/lfm2 serve"
for e in LFM2_HOST=0.0.0.0 LFM2_PORT=8080 LFM2_MODEL=/models/model.gguf; do
  printf '%s\n' "${ENVS[@]}" | grep -qx "$e" || fail "image ENV lacks $e: ${ENVS[*]}"
done
expect_eq "exposed port" "$(cfg '{{range $p, $_ := .Config.ExposedPorts}}{{$p}}{{end}}')" 8080/tcp
expect_eq "volume" "$(cfg '{{range $v, $_ := .Config.Volumes}}{{$v}}{{end}}')" /models
expect_eq "stop signal" "$(cfg '{{.Config.StopSignal}}')" SIGTERM
HC=$(cfg '{{index .Config.Healthcheck.Test 1}}')
[ "$(cfg '{{index .Config.Healthcheck.Test 0}}')" = CMD-SHELL ] || fail "no HEALTHCHECK in the image"
ok "config: user $USER_SPEC, entrypoint ${ENTRY[*]}, ENV ${ENVS[*]}"

MNT=$(podman image mount "$IID") || fail "podman image mount $IID"
[ -x "$MNT/usr/local/bin/lfm2" ] || fail "no /usr/local/bin/lfm2 in the image"

# 2. the runtime stage: no compiler, no headers, no -dev packages
for c in cc gcc c++ g++ cpp clang tcc ld as make; do
  for d in usr/bin usr/local/bin bin; do
    [ -e "$MNT/$d/$c" ] && fail "runtime image has a compiler or build tool: /$d/$c"
  done
done
h=$(find "$MNT/usr/include" "$MNT/usr/local/include" -name '*.h' 2>/dev/null | head -n 3)
[ -z "$h" ] || fail "runtime image has headers: ${h//$MNT/}"
devpkgs=$(awk '/^Package: /{p=$2} /^Status: .* installed$/{print p}' "$MNT/var/lib/dpkg/status" |
  grep -E -e '-dev$' -e '^(gcc|g\+\+|cpp|binutils|make|build-essential)(-[0-9.]+)?$' | tr '\n' ' ')
[ -z "$devpkgs" ] || fail "runtime image has build packages installed: $devpkgs"
ok "runtime stage: no compiler, no headers, no -dev packages"

# in_image LOG ENV_OVERRIDES... -- CMD...: runs CMD (the entrypoint, or a health check) as a
# container would, in the background; sets RUN (the unshare's PID). The namespace gets its own
# /proc, a /dev with the standard devices, a read-only /sys and $T/models read-only at /models;
# the root stays read-only as in compose.yaml (read_only: true). The environment is the image's
# ENV, HOSTNAME and HOME (as docker sets them), then the overrides.
in_image() {
  local log=$1; shift
  unshare --mount --pid --fork --kill-child --propagation private \
    bash "$T/enter.sh" "$MNT" "$T/models" "$USER_SPEC" "${ENVS[@]}" \
    HOSTNAME=lfm2-test HOME=/home/lfm2 "$@" 2>"$log" &
  RUN=$!
  RUN_PIDS+=("$RUN")
}
cat >"$T/enter.sh" <<'EOF'
# enter.sh MNT MODELS USER ENV... -- CMD...: runs in the new mount and PID
# namespaces (as PID 1 until it execs CMD, which then is PID 1).
set -e
mnt=$1 models=$2 user=$3; shift 3
mount -t proc -o nosuid,nodev,noexec proc "$mnt/proc"
mount -t tmpfs -o nosuid,mode=755 tmpfs "$mnt/dev"
for d in null zero full random urandom tty; do
  touch "$mnt/dev/$d"; mount --bind "/dev/$d" "$mnt/dev/$d"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$mnt/sys"
mount --bind "$models" "$mnt/models"
mount -o remount,bind,ro "$mnt/models"
env=()
while [ "$1" != -- ]; do env+=("$1"); shift; done
shift
cd /
exec env -i "${env[@]}" /usr/sbin/chroot --userspec="$user" "$mnt" "$@"
EOF

# ns_init RUN: the host PID of the namespace's PID 1 (tini), the child of unshare.
ns_init() {
  local c=""
  for _ in $(seq 1 100); do
    c=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{print $1}')
    [ -n "$c" ] && { echo "$c"; return 0; }
    sleep 0.02
  done
  return 1
}
free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}
# health_in_image: runs the image's HEALTHCHECK command inside the image (as its user, its ENV
# with LFM2_PORT=$PORT), as the container engine would; returns its exit status.
health_in_image() {
  in_image "$T/hc.log" "LFM2_PORT=$PORT" -- /bin/sh -c "$HC"
  wait "$RUN"
}

# model.gguf: a 350M-shaped model cut to 4 layers, Q4_0 (98 MB, made in ~3 s): repacking its
# weights at load keeps /health at 503 for about a second, long enough to be seen. other.gguf:
# the tiny model, for the LFM2_MODEL override.
mkdir -p "$T/models"
"$LFM2" mkmodel --preset 350m --layers 4 --type q4_0 --seed 1 -o "$T/models/model.gguf" >/dev/null 2>"$T/mk.log" ||
  { cat "$T/mk.log" >&2; fail "mkmodel --preset 350m --layers 4"; }
"$LFM2" mkmodel --preset tiny --seed 2 -o "$T/models/other.gguf" >/dev/null 2>"$T/mk2.log" ||
  { cat "$T/mk2.log" >&2; fail "mkmodel --preset tiny"; }
chmod 0755 "$T/models"; chmod 0644 "$T/models"/*.gguf

# 3. the image's defaults: LFM2_MODEL=/models/model.gguf; only host and port overridden (loopback)
PORT=$(free_port); BASE=http://127.0.0.1:$PORT; LOG=$T/a.log
in_image "$LOG" LFM2_HOST=127.0.0.1 "LFM2_PORT=$PORT" -- "${ENTRY[@]}"
A=$RUN
seen503=0
for _ in $(seq 1 1500); do
  code=$(curl -s -o "$T/h.json" -w '%{http_code}' --max-time 2 "$BASE/health")
  if [ "$code" = 503 ]; then
    [ $seen503 = 0 ] && cp "$T/h.json" "$T/h503.json"
    seen503=$((seen503 + 1))
  fi
  [ "$code" = 200 ] && break
  kill -0 "$A" 2>/dev/null || fail "the image's server exited while starting"
  sleep 0.01
done
expect_eq "health once loaded" "$code" 200
[ "$seen503" -gt 0 ] || fail "/health never answered 503 while the model loaded"
expect_eq "health body while loading" "$(jget "$T/h503.json" d.error.code)" loading
ok "/health: 503 (loading) x$seen503, then 200"
grep -q "listening on http://127.0.0.1:$PORT " "$LOG" || fail "not listening on 127.0.0.1:$PORT (LFM2_HOST, LFM2_PORT)"
expect_eq "model id (image default LFM2_MODEL)" "$(curl -s "$BASE/v1/models" | node -e '
  process.stdin.on("data", d => console.log(JSON.parse(d).data[0].id))')" model

TINI=$(ns_init "$A") || fail "no process in the container's namespace"
LFM=$(awk '{print $1}' "/proc/$TINI/task/$TINI/children")
expect_eq "tini's children (one server process)" "$(wc -w <"/proc/$TINI/task/$TINI/children")" 1
expect_eq "tini" "$(readlink "/proc/$TINI/exe" | sed 's|.*/||')" tini
expect_eq "server binary" "$(readlink "/proc/$LFM/exe")" "$MNT/usr/local/bin/lfm2"
expect_eq "tini is PID 1 in its namespace" "$(awk '/^NSpid:/{print $NF}' "/proc/$TINI/status")" 1
for p in "$TINI" "$LFM"; do
  expect_eq "uid of $p" "$(awk '/^Uid:/{print $2,$3,$4,$5}' "/proc/$p/status")" "10001 10001 10001 10001"
  expect_eq "gid of $p" "$(awk '/^Gid:/{print $2,$3,$4,$5}' "/proc/$p/status")" "10001 10001 10001 10001"
  expect_eq "capabilities of $p" "$(awk '/^CapEff:/{print $2}' "/proc/$p/status")" 0000000000000000
done
ok "tini is PID 1, one lfm2 process, both uid/gid 10001 without capabilities"

health_in_image || fail "the image's HEALTHCHECK fails on a serving server: $(cat "$T/hc.log")"
ok "HEALTHCHECK passes while serving"

http "$T/chat.json" "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0}'
expect_eq "chat status" "$CODE" 200
expect_eq "chat role" "$(jget "$T/chat.json" 'd.choices[0].message.role')" assistant
expect_eq "chat content is a string" "$(jget "$T/chat.json" 'typeof d.choices[0].message.content')" string
expect_eq "chat completion tokens" "$(jget "$T/chat.json" 'd.usage.completion_tokens > 0')" true
ok "chat: $(jget "$T/chat.json" 'd.usage.completion_tokens') tokens"

http "$T/stream.sse" -N "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0,"stream":true}'
expect_eq "streamed chat status" "$CODE" 200
[ "$(grep -c '^data: {' "$T/stream.sse")" -ge 2 ] || fail "streamed chat has too few events: $(cat "$T/stream.sse")"
tail -n 2 "$T/stream.sse" | head -n 1 | grep -qx 'data: \[DONE\]' || fail "streamed chat does not end with [DONE]"
ok "streamed chat: $(grep -c '^data: {' "$T/stream.sse") events, [DONE]"

# 4. SIGTERM to PID 1 (what `docker stop` does) with a stream in flight: it finishes, exit 0
EOS=$(curl -s "$BASE/tokenize" -d '{"content":"<|im_end|>"}' | node -e 'process.stdin.on("data",d=>console.log(JSON.parse(d).tokens[0]))')
curl -sN -o "$T/drain.sse" "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
  -d "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell a story\"}],\"max_tokens\":200,\"temperature\":0,\"logit_bias\":{\"$EOS\":-100},\"stream\":true}" &
SC=$!; CLIENT_PIDS+=("$SC")
for _ in $(seq 1 500); do
  [ "$(cat "$T/drain.sse" 2>/dev/null | grep -c '^data: ')" -ge 3 ] && break
  sleep 0.02
done
[ "$(cat "$T/drain.sse" 2>/dev/null | grep -c '^data: ')" -ge 3 ] || fail "the stream did not start"
kill -TERM "$TINI"
wait_exit "$A" 60
expect_eq "exit status after SIGTERM (tini -> lfm2 drain)" "$EXIT_RC" 0
wait "$SC"
tail -n 2 "$T/drain.sse" | head -n 1 | grep -qx 'data: \[DONE\]' || fail "the stream in flight did not finish with [DONE]"
n=$(grep '^data: {' "$T/drain.sse" | grep -vc '"finish_reason":"length"')
[ "$n" -ge 150 ] || fail "the stream in flight delivered only $n token events"
grep -q 'draining' "$LOG" || fail "no drain message in the log"
ok "SIGTERM to PID 1 with a stream in flight: $n events then [DONE], exit 0"

# After the server is gone the HEALTHCHECK fails (nothing listens).
health_in_image && fail "the image's HEALTHCHECK passes with no server"
ok "HEALTHCHECK fails with no server"

# 5. LFM2_MODEL, LFM2_HOST and LFM2_PORT overrides
PORT=$(free_port); BASE=http://127.0.0.1:$PORT; LOG=$T/b.log
in_image "$LOG" LFM2_HOST=127.0.0.1 "LFM2_PORT=$PORT" LFM2_MODEL=/models/other.gguf -- "${ENTRY[@]}"
B=$RUN
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")" = 200 ] && break
  kill -0 "$B" 2>/dev/null || fail "the image's server exited while starting with LFM2_MODEL=/models/other.gguf"
  sleep 0.05
done
grep -q "listening on http://127.0.0.1:$PORT (loading /models/other.gguf)" "$LOG" ||
  fail "LFM2_HOST/LFM2_PORT/LFM2_MODEL not honoured: $(head -n 1 "$LOG")"
expect_eq "model id (LFM2_MODEL=/models/other.gguf)" "$(curl -s "$BASE/v1/models" | node -e '
  process.stdin.on("data", d => console.log(JSON.parse(d).data[0].id))')" other
kill -TERM "$(ns_init "$B")"
wait_exit "$B" 60
expect_eq "exit status after SIGTERM" "$EXIT_RC" 0
ok "LFM2_MODEL=/models/other.gguf LFM2_HOST=127.0.0.1 LFM2_PORT=$PORT honoured"

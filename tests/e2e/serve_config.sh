# serve_config.sh: lfm2 serve settings end to end: --help, bad values (exit 2 + message), and
# precedence flags > LFM2_* env > config file > defaults observed over HTTP (/v1/models, auth).
set -u
: "${LFM2:?LFM2 must point at the lfm2 binary}"
: "${TMPDIR:=$(mktemp -d)}"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; return 0; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -n "${LOG:-}" ] && [ -f "$LOG" ] && tail -n 20 "$LOG" >&2; exit 1; }
ok() { echo "ok: $*"; }

# expect_exit2 LABEL SUBSTRING -- command...: exit status 2 and SUBSTRING in stderr
expect_exit2() {
  local label=$1 want=$2; shift 3
  local err=$TMPDIR/err.txt rc=0
  "$@" >/dev/null 2>"$err" || rc=$?
  [ "$rc" = 2 ] || fail "$label: exit status $rc, want 2 ($(cat "$err"))"
  grep -qF -- "$want" "$err" || fail "$label: stderr lacks '$want': $(cat "$err")"
  ok "$label"
}

MODEL=$TMPDIR/m.gguf
"$LFM2" mkmodel --preset tiny --seed 1 -o "$MODEL" >/dev/null 2>&1 || fail "mkmodel"

# --help lists every setting with its variable
out=$("$LFM2" serve --help) || fail "serve --help exit status"
for s in --config LFM2_CONFIG --port LFM2_PORT --parallel LFM2_PARALLEL --ctx --api-key LFM2_API_KEY \
         --alias --body-limit LFM2_DRAIN_TIMEOUT LFM2_IDLE_TIMEOUT LFM2_CORS LFM2_LOG_LEVEL; do
  grep -qF -- "$s" <<<"$out" || fail "serve --help lacks $s"
done
twice=$(grep -E "\(default[: ].*\(default" <<<"$out") && fail "a setting states its default twice: $twice"
ok "--help lists the settings, each default once"

expect_exit2 "port out of range" "--port: 70000 is out of range; accepted 0..65535" -- \
  "$LFM2" serve -m "$MODEL" --port 70000
expect_exit2 "unknown flag" "unknown option '--prot'" -- "$LFM2" serve -m "$MODEL" --prot 1
expect_exit2 "missing value" "needs a value" -- "$LFM2" serve -m "$MODEL" --ctx
expect_exit2 "bad env" "LFM2_CTX: 'abc' is not a number" -- env LFM2_CTX=abc "$LFM2" serve -m "$MODEL"
printf 'port = 0\n\n# comment\nprot = 9\n' >"$TMPDIR/bad.conf"
expect_exit2 "bad file key" "bad.conf:4: unknown setting 'prot'" -- \
  "$LFM2" serve -m "$MODEL" --config "$TMPDIR/bad.conf"
expect_exit2 "missing file" "cannot open" -- "$LFM2" serve -m "$MODEL" --config "$TMPDIR/nope.conf"
expect_exit2 "no model" "needs a model" -- env -u LFM2_MODEL -u LFM2_CONFIG "$LFM2" serve --port 0

# start NAME [env assignments] -- [serve flags]: waits for /health 200; sets BASE
start() {
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  LOG=$TMPDIR/$name.log
  env "${envs[@]}" "$LFM2" serve "$@" 2>"$LOG" &
  PID=$!
  PIDS+=("$PID")
  local port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$LOG" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$PID" 2>/dev/null || fail "server $name exited while starting"
    sleep 0.05
  done
  [ -n "$port" ] || fail "server $name never said where it listens"
  BASE="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health")" = 200 ] && return 0
    sleep 0.05
  done
  fail "server $name not healthy"
}
stop() { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
model_id() { curl -s "$@" "$BASE/v1/models" | sed -n 's|.*"id":"\([^"]*\)".*|\1|p'; }

cat >"$TMPDIR/good.conf" <<CONF
# all from the file
model = $MODEL
port = 0
alias = "from-file"
api_key = file-key
CONF

start file LFM2_CONFIG="$TMPDIR/good.conf" --
[ "$(model_id -H 'Authorization: Bearer file-key')" = from-file ] || fail "file alias: $(model_id -H 'Authorization: Bearer file-key')"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v1/models")" = 401 ] || fail "file api_key not enforced"
stop
ok "config file (via LFM2_CONFIG) applies: model, port, alias, api_key"

start env LFM2_ALIAS=from-env LFM2_API_KEY=env-key -- --config "$TMPDIR/good.conf"
[ "$(model_id -H 'Authorization: Bearer env-key')" = from-env ] || fail "env alias did not beat the file"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer file-key' "$BASE/v1/models")" = 401 ] ||
  fail "env api_key did not beat the file"
stop
ok "environment beats the file"

start flag LFM2_ALIAS=from-env -- --config "$TMPDIR/good.conf" --alias from-flag --api-key ""
[ "$(model_id)" = from-flag ] || fail "flag alias did not beat env: $(model_id)"
stop
ok "flags beat the environment (an empty --api-key turns auth off)"

start default -- -m "$MODEL" --port 0
[ "$(model_id)" = m ] || fail "default model id should be the file name without .gguf: $(model_id)"
stop
ok "default model id is the file name"
echo "all ok"

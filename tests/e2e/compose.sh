#!/usr/bin/env bash
# compose.sh: docker/compose.yaml as podman-compose reads it (`--dry-run up` prints the podman
# commands without running them): two lfm2 replicas, each against docker/Dockerfile (image tag,
# build file, no published port, EXPOSE, volume = VOLUME read-only, the model under it, health
# check = HEALTHCHECK, stop signal, grace period > drain timeout), and nginx in front of them
# against docker/nginx.conf (the only published port, on the host's loopback; the config and
# session script mounted where the config reads them; an upstream of exactly the replicas,
# hashed consistently). tests/e2e/serve_nginx.sh runs that nginx.conf for real.
# Installs podman-compose with apt when missing; fails when it cannot.
. "$(dirname "$0")/serve_common.inc"
T=$TMPDIR
ROOT=$(cd "$E2E_DIR/../.." && pwd)
DOCKER=$ROOT/docker

if ! command -v podman-compose >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq podman-compose; } \
    >"$T/apt.log" 2>&1 || { tail -n 5 "$T/apt.log" >&2; fail "cannot install podman-compose with apt-get"; }
fi

# 1. podman-compose's reading of the file, with LFM2_API_KEY unset and set. --dry-run still runs
# `podman network create` for the project's network: a project name of our own, removed on exit.
PROJECT=lfm2-compose-test-$$
trap 'podman network rm -f "${PROJECT}_default" >/dev/null 2>&1; e2e_cleanup' EXIT
dry() { (cd "$DOCKER" && env "$@" podman-compose -p "$PROJECT" -f compose.yaml --dry-run up -d 2>&1); }
dry -u LFM2_API_KEY >"$T/dry.txt" || { cat "$T/dry.txt" >&2; fail "podman-compose --dry-run up"; }
grep '^podman run ' "$T/dry.txt" >"$T/run.txt" || { cat "$T/dry.txt" >&2; fail "podman-compose starts no container"; }
expect_eq "containers podman-compose starts" "$(wc -l <"$T/run.txt")" 3
case $(cat "$T/run.txt") in *'${'*) fail "unsubstituted variable in the podman commands: $(cat "$T/run.txt")" ;; esac
# two replicas of the image, reachable only on the project network, and nginx publishing the port
for svc in lfm2-a lfm2-b; do
  run=$(grep -- "--network-alias $svc " "$T/run.txt") || fail "no container for service $svc"
  for want in "-v $DOCKER/models:/models:ro" "--read-only" "--cap-drop ALL" \
    "--security-opt no-new-privileges:true" "--stop-signal SIGTERM" "--restart unless-stopped" \
    "-e LFM2_MODEL=/models/LFM2-350M-Q4_0.gguf" "--healthcheck-interval 15s" \
    "--healthcheck-start-period 60s" " lfm2:latest"; do
    case $run in *"$want"*) ;; *) fail "podman run ($svc) lacks '$want': $run" ;; esac
  done
  case $run in *" -p "*) fail "replica $svc publishes a port (only nginx should): $run" ;; esac
  # `-e NAME` without a value: podman passes the host's NAME on only when it is set there.
  case $run in *LFM2_API_KEY=*) fail "LFM2_API_KEY given a value although unset on the host: $run" ;; esac
done
run=$(grep -- "--network-alias nginx " "$T/run.txt") || fail "no container for service nginx"
for want in "-p 127.0.0.1:8080:8080" "-v $DOCKER/nginx.conf:/etc/nginx/nginx.conf:ro" \
  "-v $DOCKER/nginx-session.js:/etc/nginx/nginx-session.js:ro" "--read-only"; do
  case $run in *"$want"*) ;; *) fail "podman run (nginx) lacks '$want': $run" ;; esac
done
dry LFM2_API_KEY=k >"$T/dry2.txt" || fail "podman-compose --dry-run up with LFM2_API_KEY set"
[ "$(grep '^podman run ' "$T/dry2.txt" | grep -cE -- '-e LFM2_API_KEY(=k)? ')" = 2 ] ||
  fail "LFM2_API_KEY set on the host does not reach both replicas: $(grep '^podman run ' "$T/dry2.txt")"
ok "podman-compose: two replicas on the project network, nginx on the loopback port, read-only model volume, key only when set"

# 2. every lfm2 service against the Dockerfile, the nginx service against docker/nginx.conf (the
# YAML parsed by python3-yaml, podman-compose's own parser; checked by node)
python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)' \
  "$DOCKER/compose.yaml" >"$T/compose.json" || fail "compose.yaml is not valid YAML"
node - "$T/compose.json" "$DOCKER/Dockerfile" "$DOCKER/nginx.conf" <<'EOF' || fail "compose.yaml does not match"
const fs = require("fs");
const compose = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
// The runtime stage: the Dockerfile from its last FROM on, continuation lines joined.
const df = fs.readFileSync(process.argv[3], "utf8").replace(/\\\n/g, " ");
const stage = df.slice(df.lastIndexOf("\nFROM "));
const instr = name => (stage.match(new RegExp("^" + name + " +(.*)$", "m")) || [])[1];
const expose = instr("EXPOSE"), volume = JSON.parse(instr("VOLUME"))[0];
const hc = instr("HEALTHCHECK"), stopsig = instr("STOPSIGNAL");
const flag = f => (hc.match(new RegExp("--" + f + "=(\\S+)")) || [])[1];
const env = Object.fromEntries([...instr("ENV").matchAll(/(\w+)=(\S+)/g)].map(m => [m[1], m[2]]));
let bad = [];
const want = (what, got, exp) => { if (got !== exp) bad.push(`${what}: ${JSON.stringify(got)}, Dockerfile/make image: ${JSON.stringify(exp)}`); };
const secs = d => { const m = String(d).match(/^(\d+)(s|m)?$/); return m ? +m[1] * (m[2] === "m" ? 60 : 1) : NaN; };
const all = Object.entries(compose.services || {});
const services = all.filter(([, s]) => s.image === "lfm2:latest");
if (services.length < 2) bad.push(`${services.length} lfm2 replica(s), want 2 or more behind nginx`);
for (const [name, s] of services) {
  const e = s.environment || {};
  want(`${name}.build.dockerfile`, s.build && s.build.dockerfile, "docker/Dockerfile");
  want(`${name}.build.context`, s.build && s.build.context, "..");
  if (s.ports) bad.push(`${name} publishes ${s.ports}: replicas are reached through nginx only`);
  want(`${name}.expose`, JSON.stringify((s.expose || []).map(String)), JSON.stringify([expose]));
  const port = e.LFM2_PORT || env.LFM2_PORT;
  want(`${name} LFM2_PORT`, port, expose);
  const vols = (s.volumes || []).map(v => String(v).split(":"));
  want(`${name}.volumes`, vols.length, 1);
  want(`${name} volume target`, vols[0] && vols[0][1], volume);
  want(`${name} volume mode`, vols[0] && vols[0][2], "ro");
  const model = String(e.LFM2_MODEL || env.LFM2_MODEL);
  if (!model.startsWith(volume + "/")) bad.push(`${name} LFM2_MODEL ${model} is not under ${volume}`);
  const h = s.healthcheck || {};
  const test = (h.test || []).join(" ");
  if (!test.includes(`http://127.0.0.1:${port}/health`)) bad.push(`${name} healthcheck ${test} does not probe /health on ${port}`);
  if (!hc.includes("/health")) bad.push("the Dockerfile HEALTHCHECK does not probe /health");
  for (const f of ["interval", "timeout", "retries"]) want(`${name} healthcheck ${f}`, String(h[f]), flag(f));
  want(`${name} healthcheck start_period`, h.start_period, flag("start-period"));
  want(`${name}.stop_signal`, s.stop_signal, stopsig);
  const drain = +(e.LFM2_DRAIN_TIMEOUT || 30);
  if (!(secs(s.stop_grace_period) > drain)) bad.push(`${name}.stop_grace_period ${s.stop_grace_period} is not longer than the ${drain} s drain`);
  if (e.LFM2_HOST) bad.push(`${name} sets LFM2_HOST: the image's ${env.LFM2_HOST} is what a container needs`);
}
// nginx: the one published port, the config and session script mounted where nginx.conf reads
// them, an upstream of exactly the lfm2 services on the image's port, hashed consistently
const conf = fs.readFileSync(process.argv[4], "utf8").replace(/#.*$/gm, "");
const ngx = all.filter(([, s]) => /(^|\/)nginx(:|$)/.test(s.image || ""));
want("nginx services", ngx.length, 1);
const [nname, n] = ngx[0] || ["nginx", {}];
const nports = (n.ports || []).map(String);
want(`${nname}.ports`, nports.length, 1);
const [nhost, , ncport] = (nports[0] || "").split(":");
want(`${nname} host address`, nhost, "127.0.0.1");
want(`nginx.conf listen (${nname} container port)`, (conf.match(/^\s*listen\s+(\d+);/m) || [])[1], ncport);
const mounts = Object.fromEntries((n.volumes || []).map(v => String(v).split(":")).map(([src, dst, mode]) => [dst, [src, mode]]));
const jsPath = (conf.match(/js_import\s+\w+\s+from\s+(\S+);/) || [])[1];
for (const [dst, src] of [["/etc/nginx/nginx.conf", "./nginx.conf"], [jsPath, "./nginx-session.js"]])
  want(`${nname} mount of ${dst}`, JSON.stringify(mounts[dst]), JSON.stringify([src, "ro"]));
const up = (conf.match(/upstream\s+\w+\s*\{([^}]*)\}/) || [])[1] || "";
if (!/^\s*hash\s+\$\w+\s+consistent;/m.test(up)) bad.push("nginx.conf upstream is not `hash $key consistent`");
const servers = [...up.matchAll(/^\s*server\s+([^\s;]+)/gm)].map(m => m[1]).sort();
want("nginx.conf upstream servers", JSON.stringify(servers), JSON.stringify(services.map(([nm]) => `${nm}:${expose}`).sort()));
want(`${nname}.depends_on`, JSON.stringify([].concat(Object.keys(n.depends_on || {}).length && !Array.isArray(n.depends_on)
  ? Object.keys(n.depends_on) : n.depends_on || []).sort()), JSON.stringify(services.map(([nm]) => nm).sort()));
if (bad.length) { console.error(bad.join("\n")); process.exit(1); }
console.log(`ok: ${services.length} replicas match the Dockerfile: port ${expose}, volume ${volume}, ${stopsig}, HEALTHCHECK ${flag("interval")}/${flag("timeout")}/${flag("start-period")}/${flag("retries")}`);
console.log(`ok: ${nname} publishes ${nports[0]} and balances ${servers.join(", ")} by consistent hash`);
EOF

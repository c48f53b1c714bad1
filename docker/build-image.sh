#!/usr/bin/env bash
# build-image.sh: builds docker/Dockerfile into an image (default lfm2:latest) with podman, no daemon.
# Installs podman (and debootstrap when needed) with apt when missing. The base image is
# debian:bookworm-slim when it is present or can be pulled; otherwise a local stand-in
# (localhost/lfm2-base:bookworm-slim) is made once with debootstrap from the Debian mirror that
# apt on this machine already uses. Run as root from anywhere:
#   docker/build-image.sh [--tag NAME] [--iidfile FILE]
# Exits non-zero with a message naming what is missing when the image cannot be built.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${IMAGE:-lfm2:latest}
IIDFILE=""
while [ $# -gt 0 ]; do
  case $1 in
    --tag) TAG=$2; shift 2 ;;
    --iidfile) IIDFILE=$2; shift 2 ;;
    *) echo "usage: $0 [--tag NAME] [--iidfile FILE]" >&2; exit 2 ;;
  esac
done
UPSTREAM_BASE=docker.io/library/debian:bookworm-slim
LOCAL_BASE=localhost/lfm2-base:bookworm-slim
SUITE=bookworm

die() { echo "build-image: $*" >&2; exit 1; }
say() { echo "build-image: $*" >&2; }

# apt_install PKG...: installs the packages that are not installed yet (as `make deps` does).
apt_install() {
  local missing="" p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  [ "$(id -u)" = 0 ] || sudo=sudo
  say "installing:$missing"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing; } >&2 ||
    die "cannot install$missing with apt-get (no access to the Debian mirror?)"
}

# apt_entries: "URI SUITE" for every enabled deb entry of apt's sources, one-line and deb822 style.
apt_entries() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' "$f" | awk '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      print $i, $(i + 1) }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush(   i, j, nu, ns, u, s) {
           if (types ~ /(^| )deb( |$)/ && enabled != "no") {
             nu = split(uris, u, " "); ns = split(suites, s, " ")
             for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
           }
           types = uris = suites = enabled = ""
         }
         /^[ \t]*#/ { next }
         /^[ \t]*$/ { flush(); next }
         { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ /, ""); val = $0 }
         key == "types" { types = val } key == "uris" { uris = val }
         key == "suites" { suites = val } key == "enabled" { enabled = tolower(val) }
         END { flush() }' "$f"
  done
}

# first_serving SUITE URI...: the first URI that serves dists/SUITE/InRelease.
first_serving() {
  local suite=$1 u; shift
  for u in "$@"; do
    curl -fsIL --max-time 15 -o /dev/null "${u%/}/dists/$suite/InRelease" && { echo "${u%/}"; return 0; }
  done
  return 1
}

# make_base: debootstraps a minbase bookworm, slims it like debian:bookworm-slim (no docs, man
# pages or locales; apt keeps no caches) and imports it as $LOCAL_BASE.
make_base() {
  local mirror security dir
  mapfile -t main_uris < <(apt_entries | awk '$2 !~ /-/ { print $1 }' | awk '!seen[$0]++')
  mapfile -t sec_uris < <(apt_entries | awk '$2 ~ /-security$/ { print $1 }' | awk '!seen[$0]++')
  [ ${#main_uris[@]} -gt 0 ] || die "no deb entry in apt's sources (/etc/apt/sources.list{,.d}) to take the Debian mirror from"
  mirror=$(first_serving $SUITE "${main_uris[@]}") ||
    die "none of apt's mirrors (${main_uris[*]}) serves dists/$SUITE: cannot make the base image"
  security=$(first_serving $SUITE-security "${sec_uris[@]}") || security=""
  apt_install debootstrap
  dir=$(mktemp -d -p /var/tmp lfm2-base.XXXXXX)
  BASE_DIR=$dir
  say "no $UPSTREAM_BASE to pull: making $LOCAL_BASE with debootstrap from $mirror"
  local include=""
  case $mirror in https:*) include=--include=ca-certificates ;; esac
  debootstrap --variant=minbase $include $SUITE "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
    { tail -n 20 "$dir/debootstrap.log" >&2; die "debootstrap $SUITE from $mirror failed"; }
  local r=$dir/rootfs
  rm -f "$r/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" $SUITE $SUITE
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" $SUITE
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } >"$r/etc/apt/sources.list.d/debian.sources"
  # What debian:bookworm-slim does: packages installed later skip docs, man pages and locales.
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* "$r"/usr/share/groff/* \
    "$r"/usr/share/lintian/* "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin \
    "$r"/var/lib/apt/lists/* "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/tmp/*
  : >"$r/etc/resolv.conf"
  : >"$r/etc/hostname"
  tar -C "$r" --numeric-owner --xattrs -cf - . |
    podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$LOCAL_BASE" >/dev/null || die "podman import of the debootstrapped base failed"
  say "made $LOCAL_BASE ($(du -sh --apparent-size "$r" | cut -f1) unpacked)"
}

# Removes the debootstrap folder, unmounting whatever debootstrap left mounted in it first.
BASE_DIR=""
cleanup() {
  [ -n "$BASE_DIR" ] || return 0
  awk -v d="$BASE_DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$BASE_DIR"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "run as root: podman build --isolation chroot and debootstrap need it"
apt_install podman
command -v podman >/dev/null || die "podman is not installed and apt could not install it"

# One build at a time on a machine: concurrent runs would each debootstrap a base.
{ exec 9>/run/lock/lfm2-build-image.lock; } 2>/dev/null || exec 9>/tmp/lfm2-build-image.lock
flock 9

if podman image exists "$UPSTREAM_BASE"; then
  base=$UPSTREAM_BASE
elif podman image exists "$LOCAL_BASE"; then
  base=$LOCAL_BASE
elif timeout 120 podman pull -q "$UPSTREAM_BASE" >/dev/null 2>"${TMPDIR:-/tmp}/lfm2-pull.$$.log"; then
  base=$UPSTREAM_BASE
else
  say "cannot pull $UPSTREAM_BASE: $(tail -n 1 "${TMPDIR:-/tmp}/lfm2-pull.$$.log")"
  make_base
  base=$LOCAL_BASE
fi
rm -f "${TMPDIR:-/tmp}/lfm2-pull.$$.log"

say "building $TAG from docker/Dockerfile on $base"
cd "$ROOT"
# Docker's image format: the OCI format has no HEALTHCHECK, and podman would drop it.
podman build --isolation chroot --format docker --pull=never --layers --build-arg "BASE=$base" \
  -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore \
  -t "$TAG" ${IIDFILE:+--iidfile "$IIDFILE"} . >&2 || die "podman build failed"
say "built $TAG: $(podman image inspect --format '{{.Size}}' "$TAG" | awk '{ printf "%.1f MB", $1 / 1e6 }')"

#!/usr/bin/env bash
# Builds docker/Dockerfile without a Docker engine and smoke-tests the image as its non-root
# user: buildah (chroot isolation) on a Debian bookworm base made with debootstrap, so nothing is
# pulled from a container registry. Needs root, buildah and debootstrap (Debian packages:
# `apt-get install buildah debootstrap`).
#
#   scripts/image-check.sh            build (cached base, cached layers) and smoke-test
#   LEARND_IMAGE_COLD=1 scripts/...   also rebuild the base and every layer (a cold build)
#
# The base (Debian's python3 3.11, the same minor version as the Dockerfile's default
# python:3.11-slim-bookworm) is cached in $LEARND_IMAGE_CACHE (default
# /var/cache/learnd-image-base) and kept as the local image localhost/learnd-base:bookworm.
# torch is installed the way scripts/_venv.sh installs it on the host: pip's configuration
# (/etc/pip.conf, /etc/xdg/pip, $PIP_FIND_LINKS) and the local wheel folders it names are
# mounted read-only into the build, so `torch==2.13.0` resolves to the same CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${LEARND_IMAGE_CACHE:-/var/cache/learnd-image-base}
BASE=localhost/learnd-base:bookworm
IMAGE=${LEARND_IMAGE_TAG:-localhost/learnd:check}
MIRROR=${LEARND_DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { echo "image-check: $*" >&2; }

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { say "needs $tool (apt-get install buildah debootstrap)"; exit 3; }
done
[ "$(id -u)" = 0 ] || { say "needs root (debootstrap, buildah's chroot isolation)"; exit 3; }

t0=$(date +%s)
if [ "${LEARND_IMAGE_COLD:-0}" = 1 ]; then
  say "cold: removing the cached base and images"
  buildah rmi -f "$IMAGE" "$BASE" >/dev/null 2>&1 || true
  buildah rmi --prune >/dev/null 2>&1 || true
  rm -rf "$CACHE"
fi

# 1. The base image: debootstrap once, keep the tarball, import it when the image is missing.
if [ ! -f "$CACHE/bookworm-python.tar" ]; then
  say "debootstrap bookworm into $CACHE (about a minute and a half)"
  mkdir -p "$CACHE"
  rm -rf "$CACHE/rootfs.partial"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$CACHE/rootfs.partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { say "debootstrap failed; see $CACHE/debootstrap.log"; exit 1; }
  rm -rf "$CACHE/rootfs.partial"/var/cache/apt/archives/*.deb "$CACHE/rootfs.partial"/var/lib/apt/lists/*
  tar -C "$CACHE/rootfs.partial" -cf "$CACHE/bookworm-python.tar.partial" .
  mv "$CACHE/bookworm-python.tar.partial" "$CACHE/bookworm-python.tar"
  rm -rf "$CACHE/rootfs.partial"
fi
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  say "importing the base as $BASE"
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$CACHE/bookworm-python.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
  buildah commit -q "$ctr" "$BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
fi
t1=$(date +%s)

# 2. The image, from docker/Dockerfile unchanged except for the base and torch's source:
# pip's effective configuration here (files and PIP_* variables) becomes the build's
# /etc/pip.conf, and the local folders it names are mounted read-only.
pipconf=$(mktemp /tmp/learnd-image-pip.XXXXXX)
buildlog=$(mktemp /tmp/learnd-image-build.XXXXXX)
trap 'rm -f "$pipconf" "$buildlog"' EXIT
python3 - "$pipconf" <<'PY'
import re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                     text=True).stdout
found = {}
for line in out.splitlines():  # global.key='v' (files) and :env:.key='v' (variables, win)
    m = re.match(r"(global|:env:)\.([\w-]+)='(.*)'$", line)
    if m and (m[1] == ":env:" or m[2] not in found):
        found[m[2]] = m[3]
with open(sys.argv[1], "w") as f:
    f.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(found.items())))
PY
mounts=(--volume "$pipconf:/etc/pip.conf:ro")
for path in $(grep -oE "(file://)?/[^ ]+" "$pipconf" | sed 's|^file://||' | sort -u); do
  [ -f "$path" ] && path=$(dirname "$path")  # a constraints file: its folder
  [ "$(basename "$path")" = simple ] && path=$(dirname "$path")  # an index and its files
  [ -d "$path" ] && mounts+=(--volume "$path:$path:ro")
done
no_cache=()
[ "${LEARND_IMAGE_COLD:-0}" = 1 ] && no_cache=(--no-cache)
say "building $IMAGE (buildah, chroot isolation)"
buildah build --isolation chroot --layers --format docker \
  -f docker/Dockerfile -t "$IMAGE" \
  --build-arg PYTHON_IMAGE="$BASE" --build-arg TORCH_INDEX_URL= \
  "${no_cache[@]}" "${mounts[@]}" . >"$buildlog" 2>&1 \
  || { tail -40 "$buildlog" >&2; say "build failed"; exit 1; }
t2=$(date +%s)

# 3. Smoke test as the image's user (USER 10001:10001), with its environment, the compose
# stack's config file mounted where compose mounts it.
ctr=$(buildah from "$IMAGE")
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true; rm -f "$pipconf" "$buildlog"' EXIT
in_image() {
  buildah run --isolation chroot -v "$PWD/docker/learnd.toml:/etc/learnd/learnd.toml:ro" \
    --env LEARND_CONFIG=/etc/learnd/learnd.toml "$ctr" -- "$@"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
uid=$(in_image id -u)
[ "$uid" = 10001 ] || { say "runs as uid $uid, not the image's 10001"; exit 1; }
say "learnd --help"
in_image learnd --help >/dev/null
say "learnd config show"
in_image learnd config show | grep -q '"topic": "learnd.events"'
# The chroot shares this machine's network: the demo inside serves on free loopback ports.
port=$(free_port)
mport=$(free_port)
say "learnd health, as the HEALTHCHECK runs it (port from LEARND_SERVING__TCP_PORT), against a demo inside the image"
in_image sh -c "
  learnd demo --duration 120 --rate 500 --state-dir /tmp/demo \
    --set serving.tcp_port=$port --set metrics.port=$mport >/tmp/demo.out 2>&1 &
  demo=\$!
  for i in \$(seq 1 90); do
    if LEARND_SERVING__TCP_PORT=$port learnd health >/tmp/health.out 2>&1; then
      cat /tmp/health.out; kill -INT \$demo; wait \$demo; exit 0
    fi
    sleep 1
  done
  cat /tmp/demo.out /tmp/health.out; kill -KILL \$demo; exit 1
"
t3=$(date +%s)
user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
health=$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE")
say "ok: user $user, healthcheck $health"
say "timings: base $((t1 - t0)) s, build $((t2 - t1)) s, smoke $((t3 - t2)) s"

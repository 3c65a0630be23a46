#!/usr/bin/env bash
# Builds the bundled agents' Docker image (coral-agents:0.1.0, also :latest) with no image registry:
#   agents/docker/build-image.sh                 base made from this machine's Debian packages (fast)
#   agents/docker/build-image.sh --debootstrap   base made with debootstrap (slower, portable)
#   agents/docker/build-image.sh --base IMAGE    build on an image you already have (needs python3.11)
# The MCP SDK is installed offline from a wheelhouse filled here with `pip download`. The build is
# skipped when an image with the same inputs (hash label) already exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
IMAGE=${CORAL_AGENT_IMAGE:-coral-agents:0.1.0}
BASE=coral-pybase:bookworm
mode=host
while [ $# -gt 0 ]; do
  case "$1" in
    --debootstrap) mode=debootstrap ;;
    --base) BASE=$2; mode=given; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
t0=$(date +%s.%N)
elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)"; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/coral-server/wheels
mkdir -p "$cache"
# Wheels for the image's Python (3.11, same platform as this machine).
$PY -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
  -d "$cache" mcp >/dev/null

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/coral/coral_server" "$ctx/wheels"
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$root/coral_server/__init__.py" "$ctx/coral/coral_server/"
cp -r "$root/coral_server/agent" "$ctx/coral/coral_server/agent"
cp -r "$root/agents" "$ctx/coral/agents"
rm -rf "$ctx/coral/agents/docker"
find "$ctx/coral" -name __pycache__ -prune -exec rm -rf {} +
cp "$cache"/*.whl "$ctx/wheels/"
hash=$( (cd "$ctx" && find coral Dockerfile -type f -print0 | sort -z | xargs -0 sha256sum; ls wheels; echo "$BASE") \
  | sha256sum | cut -c1-16)

if [ -n "$(docker images -q --filter "label=coral.inputs=$hash" "$IMAGE")" ]; then
  echo "image $IMAGE is up to date (inputs $hash), $(elapsed) s"
  exit 0
fi

if [ "$mode" != given ] && [ -z "$(docker images -q "$BASE")" ]; then
  if [ "$mode" = debootstrap ]; then
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,ca-certificates bookworm "$rootfs" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc "$rootfs"/usr/share/man
    tar -C "$rootfs" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
    rm -rf "$rootfs"
  else
    pkgs="python3.11 python3.11-venv python3-pip-whl python3-setuptools-whl ca-certificates dash"
    missing=$(for p in $pkgs; do dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
    if [ -n "$missing" ]; then apt-get install -y -q $missing >/dev/null; fi
    list="$ctx/base-files"
    /usr/bin/python3 "$here/closure.py" $pkgs > "$list"
    tar -C / -c --no-recursion -T "$list" 2>/dev/null \
      | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
  fi
  echo "base image $BASE ready, $(elapsed) s"
fi

docker build -q --network host --build-arg "BASE=$BASE" --label "coral.inputs=$hash" \
  -t "$IMAGE" -t "${IMAGE%:*}:latest" "$ctx" >/dev/null
echo "built $IMAGE (inputs $hash) in $(elapsed) s: $(docker images --format '{{.Size}}' "$IMAGE")"

#!/usr/bin/env bash
# Build the bundled agents' Docker image, with no image registry.
#
# Usage: agents/docker/build-image.sh [--debootstrap] [--base IMAGE] [--refresh-wheels] [--rebuild-base]
#
# Result: image coral-agents:0.1.0 (also tagged coral-agents:latest) with
#   - Python 3.11 (Debian's) and a venv /opt/venv holding `mcp` and its dependencies; the venv's
#     `python` comes first on PATH;
#   - coral_server/__init__.py, coral_server/agent/ and agents/ (without agents/docker/) copied to
#     /opt/coral and compiled to bytecode there, with PYTHONPATH=/opt/coral. Run an agent as
#     `python /opt/coral/agents/echo/agent.py`.
#
# Nothing is ever pulled. The base image (coral-pybase:bookworm, or $CORAL_PYBASE) is made here, and
# only when it is missing:
#   default        from this machine's installed Debian packages python3.11, python3.11-venv,
#                  ca-certificates, dash and their dependency closure (dpkg), tarred and `docker
#                  import`ed (about 2 s). Packages that are missing are installed with apt-get first.
#   --debootstrap  `debootstrap --variant=minbase` of bookworm from the host's Debian mirror, then
#                  imported (slower, needs the mirror; does not depend on what the host has installed).
#   --base IMAGE   use an image you already have (it must exist locally and provide python3.11 with
#                  the venv module, and /bin/sh); no base image is made.
#   --rebuild-base remake the base image even if it exists.
#
# The wheels come from a wheelhouse on the host, ${XDG_CACHE_HOME:-$HOME/.cache}/coral-server/wheels,
# filled with `pip download` (run by $PYTHON, default python3) only when it cannot already satisfy
# `mcp` offline, or when --refresh-wheels is given (then newer releases are picked up). The wheel set
# last resolved is recorded there and reused as is. The image build installs them with --no-index.
#
# The image carries the label coral.inputs=<hash of the agent files, the wheel list, the Dockerfile
# and the base image id>. When an image with that label exists the build is skipped, so a second run
# with nothing changed takes about a second. Timings are printed for every step.
#
# Environment: PYTHON (interpreter for `pip download`), CORAL_PYBASE (base image name),
# DOCKER (docker CLI, default docker).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
IMAGE=coral-agents:0.1.0
LATEST=coral-agents:latest
BASE=${CORAL_PYBASE:-coral-pybase:bookworm}
DOCKER=${DOCKER:-docker}
PY=${PYTHON:-python3}
mode=host
refresh=0
rebuild_base=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "build-image: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --debootstrap) mode=debootstrap ;;
    --base)
      [ $# -ge 2 ] && [ -n "$2" ] || die "--base needs an image name"
      BASE=$2; mode=given; shift ;;
    --base=*) BASE=${1#--base=}; mode=given ;;
    --refresh-wheels) refresh=1 ;;
    --rebuild-base) rebuild_base=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
if [ "$mode" = given ] && [ "$rebuild_base" = 1 ]; then die "--rebuild-base cannot be used with --base"; fi

# Timings (bash's EPOCHREALTIME: no external tools).
t_start=$EPOCHREALTIME
t_step=$EPOCHREALTIME
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
step() {  # step MESSAGE: print MESSAGE with the time since the previous step
  local now=$EPOCHREALTIME
  printf '  %-58s %6s s\n' "$1" "$(secs "$t_step" "$now")"
  t_step=$now
}
total() { secs "$t_start" "$EPOCHREALTIME"; }

command -v "$DOCKER" >/dev/null || die "the docker CLI ($DOCKER) is not installed"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers ('$DOCKER info' fails)"
export DOCKER_BUILDKIT=0  # the legacy builder: no buildx here, and it honours --network host as is

image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

work=$(mktemp -d "${TMPDIR:-/tmp}/coral-image.XXXXXX")
cleanup() {
  # debootstrap leaves root-owned trees with mount points; never follow them out of $work.
  rm -rf --one-file-system "$work" 2>/dev/null || true
}
trap cleanup EXIT

echo "== coral agents image $IMAGE (base $BASE)"

# ---------------------------------------------------------------------------------------------------
# 1. Wheelhouse (host side). Reuse the last resolution recorded in the cache when all its wheels are
# still there (no pip run at all); else resolve offline from the cache; download only when needed.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/coral-server/wheels
resolved=$cache/resolved-mcp-cp311.txt
mkdir -p "$cache" "$work/ctx/wheels"
have_resolved() {
  local w
  [ -s "$resolved" ] || return 1
  while IFS= read -r w; do [ -f "$cache/$w" ] || return 1; done <"$resolved"
}
if [ "$refresh" = 0 ] && have_resolved; then
  while IFS= read -r w; do
    ln "$cache/$w" "$work/ctx/wheels/$w" 2>/dev/null || cp "$cache/$w" "$work/ctx/wheels/$w"
  done <"$resolved"
  step "wheels: $(wc -l <"$resolved") cached in $cache"
else
  "$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip (set PYTHON to an interpreter with pip)"
  # Wheels for CPython 3.11 on this platform: the image's libc is this machine's (or bookworm's).
  pipdl=("$PY" -m pip download -q --disable-pip-version-check --only-binary=:all:
         --python-version 3.11 --implementation cp --abi cp311)
  if [ "$refresh" = 0 ] && "${pipdl[@]}" --no-index --find-links "$cache" -d "$work/ctx/wheels" mcp \
       >"$work/pip.log" 2>&1; then
    step "wheels: resolved offline from $cache"
  else
    "${pipdl[@]}" -d "$cache" mcp >"$work/pip.log" 2>&1 \
      || { cat "$work/pip.log" >&2; die "pip download mcp failed (is the package index reachable?)"; }
    rm -f "$work/ctx/wheels"/*
    "${pipdl[@]}" --no-index --find-links "$cache" -d "$work/ctx/wheels" mcp >>"$work/pip.log" 2>&1 \
      || { cat "$work/pip.log" >&2; die "the wheelhouse does not satisfy mcp after downloading"; }
    step "wheels: downloaded into $cache"
  fi
  (cd "$work/ctx/wheels" && ls | LC_ALL=C sort) >"$resolved.tmp" && mv "$resolved.tmp" "$resolved"
fi

# ---------------------------------------------------------------------------------------------------
# 2. Base image, made only when missing.
host_base() {  # the host's installed Debian packages -> tar -> docker import
  local pkgs=(python3.11 python3.11-venv ca-certificates dash) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "  installing missing host packages: ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >"$work/apt.log" 2>&1 \
      || { apt-get update -q >>"$work/apt.log" 2>&1 && apt-get install -y -q "${missing[@]}" >>"$work/apt.log" 2>&1; } \
      || { tail -20 "$work/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
  fi

  # Dependency closure over Pre-Depends + Depends, first installed alternative of "a | b", virtual
  # names resolved through Provides. debconf is needed only by maintainer scripts (never run in the
  # image) and would drag perl in, so it is left out.
  local -A seen=() provider=()
  local line name prov
  while IFS=$'\t' read -r name prov; do
    [ -n "$prov" ] || continue
    local v
    for v in ${prov//,/ }; do
      case "$v" in (*'('*|*')'*|'='*|[0-9]*) continue ;; esac
      [ -n "${provider[$v]:-}" ] || provider[$v]=$name
    done
  done < <(dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Provides}\n' | awk -F'\t' '$1 ~ /^ii/ { print $2 "\t" $3 }')
  local todo=("${pkgs[@]}") pkg deps group alt
  while [ ${#todo[@]} -gt 0 ]; do
    pkg=${todo[-1]}; unset 'todo[-1]'
    [ -z "${seen[$pkg]:-}" ] || continue
    seen[$pkg]=1
    deps=$(dpkg-query -W -f '${Pre-Depends}, ${Depends}' "$pkg")
    IFS=',' read -r -a groups <<<"$deps"
    for group in "${groups[@]}"; do
      IFS='|' read -r -a alts <<<"$group"
      for alt in "${alts[@]}"; do
        name=$(sed -E 's/\(.*\)//; s/:any//; s/[[:space:]]//g' <<<"$alt")
        [ -n "$name" ] || continue
        case "$name" in debconf|debconf-2.0) continue 2 ;; esac
        if dpkg-query -W -f '${db:Status-Abbrev}' "$name" 2>/dev/null | grep -q '^ii'; then
          todo+=("$name"); break
        elif [ -n "${provider[$name]:-}" ]; then
          todo+=("${provider[$name]}"); break
        fi
      done
    done
  done
  printf '%s\n' "${!seen[@]}" | sort >"$work/base-packages"

  # Files: dpkg -L minus docs, with merged-usr paths (/bin/x is /usr/bin/x in the tar, and the /bin ->
  # usr/bin links are listed once each, or docker import fails on them). Directories are not listed:
  # the import creates them. Debian compiles the standard library's .pyc files in postinst, so they
  # are not in dpkg -L: add the host's ones for each listed .py (a cold import of mcp takes 1.5 s
  # without them, 1 s with them).
  xargs dpkg -L <"$work/base-packages" \
    | grep -Ev '^/usr/share/(doc|man|info|locale|lintian|bug)/' \
    | sed -E 's#^/(bin|sbin|lib|lib64|libx32|lib32)/#/usr/\1/#' \
    | sort -u >"$work/dpkg-files"
  {
    while IFS= read -r f; do
      if [ -L "$f" ] || [ -f "$f" ]; then printf '%s\n' "${f#/}"; fi
    done <"$work/dpkg-files"
    sed -nE 's#^(/usr/lib/python3\.11/(.*/)?)([^/]+)\.py$#\1__pycache__/\3.cpython-311.pyc#p' "$work/dpkg-files" \
      | { grep -v '/dist-packages/' || true; } \
      | while IFS= read -r f; do if [ -f "$f" ]; then printf '%s\n' "${f#/}"; fi; done
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then echo etc/ssl/certs/ca-certificates.crt; fi  # postinst
    for l in bin sbin lib lib64 libx32 lib32; do if [ -L "/$l" ]; then echo "$l"; fi; done
  } | sort -u >"$work/base-files"

  # Our own minimal /etc/passwd and /etc/group, and /tmp, /var/tmp (mode 1777): not the host's.
  local extra=$work/extra
  mkdir -p "$extra/etc" "$extra/tmp" "$extra/var/tmp" "$extra/root"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$extra/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$extra/etc/group"
  chmod 1777 "$extra/tmp" "$extra/var/tmp"
  chmod 700 "$extra/root"
  tar -C / -cf "$work/base.tar" --no-recursion -T "$work/base-files"
  tar -C "$extra" -rf "$work/base.tar" --no-recursion --owner=0 --group=0 etc/passwd etc/group tmp var/tmp root
  "$DOCKER" import -m "coral: host Debian packages $(tr '\n' ' ' <"$work/base-packages")" \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/usr/bin/python3.11"]' "$work/base.tar" "$BASE" >/dev/null
  step "base: $(wc -l <"$work/base-packages") host packages, $(wc -l <"$work/base-files") files, imported"
}

debootstrap_base() {  # debootstrap minbase of bookworm -> tar -> docker import
  if ! command -v debootstrap >/dev/null; then
    apt-get install -y -q debootstrap >"$work/apt.log" 2>&1 \
      || { apt-get update -q >>"$work/apt.log" 2>&1 && apt-get install -y -q debootstrap >>"$work/apt.log" 2>&1; } \
      || { tail -20 "$work/apt.log" >&2; die "apt-get install debootstrap failed"; }
  fi
  # The host's Debian mirror (deb822 or one-line sources), else deb.debian.org.
  local mirror
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }')
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' \
                                 /etc/apt/sources.list 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  local rootfs=$work/rootfs
  # python3-distutils is listed because python3.11-venv depends on the virtual python3.11-distutils,
  # which debootstrap's resolver cannot pick a provider for.
  debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2
         if [ -f "$rootfs/debootstrap/debootstrap.log" ]; then tail -30 "$rootfs/debootstrap/debootstrap.log" >&2; fi
         die "debootstrap failed (mirror $mirror)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale
  tar -C "$rootfs" --numeric-owner --one-file-system -c . \
    | "$DOCKER" import -m "coral: debootstrap minbase bookworm" \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["/usr/bin/python3.11"]' - "$BASE" >/dev/null
  step "base: debootstrap ($mirror) and import"
}

if [ "$mode" = given ]; then
  [ -n "$(image_id "$BASE")" ] || die "base image $BASE does not exist locally (nothing is pulled)"
  step "base: $BASE given"
elif [ -n "$(image_id "$BASE")" ] && [ "$rebuild_base" = 0 ]; then
  step "base: $BASE exists"
else
  if [ "$mode" = debootstrap ]; then debootstrap_base; else host_base; fi
fi
base_id=$(image_id "$BASE")
[ -n "$base_id" ] || die "base image $BASE was not created"

# ---------------------------------------------------------------------------------------------------
# 3. Build context and input hash.
ctx=$work/ctx
mkdir -p "$ctx/coral/coral_server"
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$root/coral_server/__init__.py" "$ctx/coral/coral_server/"
cp -r "$root/coral_server/agent" "$ctx/coral/coral_server/agent"
cp -r "$root/agents" "$ctx/coral/agents"
rm -rf "$ctx/coral/agents/docker"
find "$ctx/coral" \( -name __pycache__ -o -name '*.pyc' -o -name .mypy_cache -o -name .ruff_cache \) -prune \
  -exec rm -rf {} +
wheels_hash=$(cd "$ctx/wheels" && ls | sort | sha256sum | cut -c1-16)
inputs=$( (cd "$ctx" && find coral Dockerfile -type f | LC_ALL=C sort | xargs sha256sum
           echo "wheels $(cd wheels && ls | LC_ALL=C sort | tr '\n' ' ')"
           echo "base $base_id") | sha256sum | cut -c1-16)
step "context: $(find "$ctx/coral" -type f | wc -l) files, $(ls "$ctx/wheels" | wc -l) wheels, inputs $inputs"

# ---------------------------------------------------------------------------------------------------
# 4. Build, unless an image with these inputs exists.
found=$("$DOCKER" images -q --no-trunc --filter "label=coral.inputs=$inputs" | head -1)
if [ -n "$found" ]; then
  # Make sure both tags point at it (cheap, and repairs a removed tag).
  [ "$(image_id "$IMAGE")" = "$found" ] || "$DOCKER" tag "$found" "$IMAGE"
  [ "$(image_id "$LATEST")" = "$found" ] || "$DOCKER" tag "$found" "$LATEST"
  step "build: skipped, $IMAGE is up to date"
else
  if ! "$DOCKER" build --network host --pull=false \
         --build-arg "BASE=$BASE" --build-arg "WHEELS_HASH=$wheels_hash" \
         --label "coral.inputs=$inputs" --label "coral.base=$base_id" \
         -t "$IMAGE" -t "$LATEST" "$ctx" >"$work/build.log" 2>&1; then
    tail -40 "$work/build.log" >&2
    die "docker build failed"
  fi
  step "build: docker build"
  # The build stage's image is kept as cache for the current wheel set; drop the stale ones.
  for id in $("$DOCKER" images -q --filter dangling=true --filter label=coral.agents.build-stage); do
    [ "$("$DOCKER" image inspect --format '{{index .Config.Labels "coral.agents.build-stage"}}' "$id")" = "$wheels_hash" ] \
      || "$DOCKER" rmi "$id" >/dev/null 2>&1 || true
  done
fi

# Earlier builds of this image that lost both tags are only clutter: remove them.
for id in $("$DOCKER" images -q --filter dangling=true --filter label=coral.inputs); do
  "$DOCKER" rmi "$id" >/dev/null 2>&1 || true  # still used by a container: keep it
done

size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')
echo "== $IMAGE ($LATEST) ready: $size, inputs $inputs, total $(total) s"

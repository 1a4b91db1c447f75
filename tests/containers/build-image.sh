#!/usr/bin/env bash
# Builds (or reuses) the container images of the fleet tests and prints the
# fleet image's tag as the last line of stdout. Logs go to stderr.
#
#   1. convoy-base:<hash>  debootstrap --variant=minbase of Debian bookworm plus
#      base-packages.txt, `docker import`ed. <hash> covers this script and the
#      package list; the rootfs tarball is also kept in the cache directory, so
#      a pruned image is re-imported without network.
#   2. convoy-fleet:<hash> FROM the base: convoy-agent, convoy-coordinator (from
#      $CONVOY_BIN_DIR, default target/debug) and the demo apt repository
#      (packaging/build-debs.sh) at /srv/convoy-repo, configured as
#      `deb [trusted=yes] file:/srv/convoy-repo ./`. <hash> covers the
#      binaries, the repository, the Dockerfile and the base tag.
# Each is skipped when its tag exists. Also tags convoy-fleet:latest.
#
# Environment: CONVOY_IMAGE_CACHE (default ~/.cache/convoy-images),
# CONVOY_BIN_DIR, DEBIAN_MIRROR (default: the mirror this machine's apt uses),
# DEBIAN_SUITE (default bookworm).
# Needs: docker, and for a cold base build debootstrap (root) and network
# access to the Debian mirror. Everything after that works offline.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
cache=${CONVOY_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/convoy-images}
bin_dir=${CONVOY_BIN_DIR:-${CARGO_TARGET_DIR:-$repo_root/target}/debug}
suite=${DEBIAN_SUITE:-bookworm}
mkdir -p "$cache"

log() { echo "[build-image] $*" >&2; }
t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# One build at a time per machine (tests run in parallel processes).
exec 9>"$cache/lock"
flock 9

packages=$(grep -v '^\s*#' "$here/base-packages.txt" | grep -v '^\s*$' | sort | paste -sd, -)
base_hash=$(cat "$0" "$here/base-packages.txt" <(echo "$suite") | sha256sum | cut -c1-16)
base_tag=convoy-base:$base_hash

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
  [ -z "$m" ] && m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v -- '-security' | grep -i debian | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

if docker image inspect "$base_tag" >/dev/null 2>&1; then
  log "base image $base_tag cached"
else
  tarball=$cache/base-$base_hash.tar
  if [ ! -s "$tarball" ]; then
    if ! command -v debootstrap >/dev/null; then
      log "debootstrap missing; installing it with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 || {
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
    fi
    rootfs=$cache/rootfs-$base_hash
    rm -rf "$rootfs"
    m=$(mirror)
    log "debootstrap --variant=minbase $suite from $m (packages: $packages)"
    t=$(date +%s.%N)
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$m" >"$cache/debootstrap.log" 2>&1 || {
      tail -n 30 "$cache/debootstrap.log" >&2; log "debootstrap failed (log: $cache/debootstrap.log)"; exit 1; }
    log "debootstrap took $(since "$t")"
    # Containers have no internet: no remote sources, no caches; dpkg without fsync.
    rm -f "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    echo force-unsafe-io > "$rootfs/etc/dpkg/dpkg.cfg.d/02convoy-unsafe-io"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nDpkg::Use-Pty "false";\n' > "$rootfs/etc/apt/apt.conf.d/02convoy"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  t=$(date +%s.%N)
  docker import --change 'CMD ["/bin/bash"]' "$tarball" "$base_tag" >/dev/null
  log "imported $base_tag in $(since "$t")"
fi

# The fleet layer's build context.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
for b in convoy-agent convoy-coordinator; do
  [ -x "$bin_dir/$b" ] || { log "missing $bin_dir/$b: run cargo build --workspace --bins"; exit 1; }
  cp "$bin_dir/$b" "$ctx/bin/$b"
done
"$repo_root/packaging/build-debs.sh" "$ctx/repo" >&2
cp "$here/Dockerfile.fleet" "$ctx/Dockerfile"
cp "$here/boot.sh" "$ctx/boot.sh"
fleet_hash=$( (echo "$base_tag"; cd "$ctx" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
fleet_tag=convoy-fleet:$fleet_hash
if docker image inspect "$fleet_tag" >/dev/null 2>&1; then
  log "fleet image $fleet_tag cached"
else
  t=$(date +%s.%N)
  DOCKER_BUILDKIT=0 docker build -q --network none --build-arg "BASE=$base_tag" -t "$fleet_tag" "$ctx" >/dev/null 2>"$cache/docker-build.log" || {
    cat "$cache/docker-build.log" >&2; exit 1; }
  log "built $fleet_tag in $(since "$t")"
fi
docker tag "$fleet_tag" convoy-fleet:latest
log "done in $(since "$t0")"
echo "$fleet_tag"

#!/usr/bin/env bash
# Builds Convoy's own Debian packages (not the demo packages of packaging/):
#   convoy-coordinator  /usr/bin/convoy-coordinator, its systemd unit, /etc/default/convoy-coordinator
#   convoy-agent        /usr/bin/convoy-agent, its systemd unit, /etc/default/convoy-agent
#   convoy              /usr/bin/convoy (the operator CLI) and shell completions
# each with its man pages (written by `convoy man`), into OUTDIR as
# NAME_VERSION_ARCH.deb. Prints the paths of the .debs, one a line.
#
#   packaging/convoy/convoy-debs.sh OUTDIR [BINDIR]
#
# BINDIR holds the three binaries (default: $CARGO_TARGET_DIR/release, or
# target/release; run `cargo build --release --bins` first). Tests pass
# target/debug. Environment: CONVOY_DEB_VERSION (default: the workspace
# version), CONVOY_DEB_COMPRESSION (xz, the default, gzip or none),
# CONVOY_DEB_STRIP=0 to keep debug symbols. Needs dpkg-deb (and strip unless
# CONVOY_DEB_STRIP=0); no network, no cargo tool.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
out=${1:?usage: convoy-debs.sh OUTDIR [BINDIR]}
bin_dir=${2:-${CARGO_TARGET_DIR:-$repo_root/target}/release}
version=${CONVOY_DEB_VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$repo_root/Cargo.toml")}
compression=${CONVOY_DEB_COMPRESSION:-xz}
arch=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

[ -n "$version" ] || { echo "convoy-debs.sh: no version found in Cargo.toml" >&2; exit 2; }
case "$version" in [0-9]*) ;; *) echo "convoy-debs.sh: version $version must start with a digit" >&2; exit 2 ;; esac
for b in convoy convoy-agent convoy-coordinator; do
  [ -x "$bin_dir/$b" ] || { echo "convoy-debs.sh: missing $bin_dir/$b (cargo build --release --bins)" >&2; exit 2; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Man pages of all three programs, split below by program.
"$bin_dir/convoy" man --out-dir "$work/man" >/dev/null

# stage PACKAGE: the common skeleton (binary, docs, man pages).
stage() {
  local pkg=$1 root=$work/$1
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/$pkg" "$root/usr/share/man/man1"
  if [ "${CONVOY_DEB_STRIP:-1}" = 1 ]; then
    strip --strip-unneeded -o "$root/usr/bin/$pkg" "$bin_dir/$pkg"
  else
    install -m 0755 "$bin_dir/$pkg" "$root/usr/bin/$pkg"
  fi
  chmod 0755 "$root/usr/bin/$pkg"
  local page
  for page in "$work"/man/*.1; do
    local name; name=$(basename "$page" .1)
    local owner=convoy
    case "$name" in
      convoy-agent|convoy-agent-*) owner=convoy-agent ;;
      convoy-coordinator|convoy-coordinator-*) owner=convoy-coordinator ;;
    esac
    [ "$owner" = "$pkg" ] && gzip -9n < "$page" > "$root/usr/share/man/man1/$name.1.gz"
  done
  printf 'Convoy %s (%s), built by packaging/convoy/convoy-debs.sh.\nSee docs/packages.md in the Convoy sources.\n' \
    "$version" "$pkg" > "$root/usr/share/doc/$pkg/README"
}

# service PACKAGE: the unit, the /etc/default file (a conffile) and the maintainer scripts.
service() {
  local pkg=$1 root=$work/$1
  install -d "$root/usr/lib/systemd/system" "$root/etc/default"
  install -m 0644 "$here/$pkg.service" "$root/usr/lib/systemd/system/$pkg.service"
  install -m 0644 "$here/default/$pkg" "$root/etc/default/$pkg"
  echo "/etc/default/$pkg" > "$root/DEBIAN/conffiles"
  local s
  for s in postinst prerm postrm; do
    install -m 0755 "$here/maint/$pkg.$s" "$root/DEBIAN/$s"
  done
}

# control PACKAGE DEPENDS DESCRIPTION
control() {
  local pkg=$1 depends=$2 desc=$3 root=$work/$1
  local size; size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: Convoy maintainers <convoy@example.invalid>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://example.invalid/convoy
Description: $desc
CONTROL
}

stage convoy-coordinator
service convoy-coordinator
control convoy-coordinator "libc6, passwd" "Convoy coordinator: plans and drives fleet upgrades
 Holds the rollouts, the CA and the tokens; agents and operators connect to it
 over TLS. Runs as the convoy user under a hardened systemd unit."

stage convoy-agent
service convoy-agent
control convoy-agent "libc6, dpkg" "Convoy agent: runs upgrade steps on this host
 Connects to the coordinator and runs the steps of rollouts (packages,
 services, commands) as root. Its systemd unit uses KillMode=process so a
 restart of the agent never kills a package manager it started."

stage convoy
install -d "$work/convoy/usr/share/bash-completion/completions" "$work/convoy/usr/share/zsh/vendor-completions" \
  "$work/convoy/usr/share/fish/vendor_completions.d"
for p in convoy convoy-agent convoy-coordinator; do
  "$bin_dir/convoy" completions bash --program "$p" > "$work/convoy/usr/share/bash-completion/completions/$p"
  "$bin_dir/convoy" completions zsh --program "$p" > "$work/convoy/usr/share/zsh/vendor-completions/_$p"
  "$bin_dir/convoy" completions fish --program "$p" > "$work/convoy/usr/share/fish/vendor_completions.d/$p.fish"
done
control convoy "libc6" "Convoy operator CLI
 Submits plans to a Convoy coordinator and watches, pauses, approves and
 rolls back rollouts."

for pkg in convoy-coordinator convoy-agent convoy; do
  find "$work/$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  deb=$out/${pkg}_${version}_${arch}.deb
  dpkg-deb --root-owner-group -Z"$compression" --build "$work/$pkg" "$deb" >/dev/null
  echo "$deb"
done

#!/usr/bin/env bash
# Builds the demo service suite as real .deb packages, in every version, into
# OUTDIR, and writes a flat apt repository index there (Packages, Packages.gz,
# Release), so a host can use it as
#   deb [trusted=yes] file:OUTDIR ./
# and `apt-get install convoy-demo-db=1.0.0`.
#
# Needs only dpkg-deb, gzip, sha256sum and md5sum: no network. Reproducible:
# the same sources give byte-identical output (SOURCE_DATE_EPOCH is fixed).
set -euo pipefail

VERSIONS=(1.0.0 1.1.0 2.0.0)

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-debs.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export SOURCE_DATE_EPOCH=1700000000
stamp=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M.%S)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# schema version of convoy-demo-db for a package version
schema_of() {
  case "$1" in
    1.0.0) echo 1 ;;
    1.1.0) echo 2 ;;
    2.0.0) echo 3 ;;
    *) echo "no schema for $1" >&2; exit 1 ;;
  esac
}

# render TEMPLATE NAME VERSION PORT: fills @TOKENS@ and the per-package extras.
render() {
  local tpl=$1 name=$2 version=$3 port=$4 key schema
  case "$version" in 1.*) key=port ;; *) key=listen_port ;; esac
  schema=$(if [ "$name" = db ]; then schema_of "$version"; else echo 0; fi)
  local pre="$here/$name/preinst.extra" post="$here/$name/postinst.extra"
  awk -v pre="$pre" -v post="$post" '
    function cat(f,   l) { while ((getline l < f) > 0) print l; close(f) }
    /^@PREINST_EXTRA@$/  { cat(pre); next }
    /^@POSTINST_EXTRA@$/ { cat(post); next }
    { print }' "$tpl" |
    sed -e "s/@NAME@/$name/g" -e "s/@VERSION@/$version/g" -e "s/@PORT@/$port/g" \
        -e "s/@PORT_KEY@/$key/g" -e "s/@SCHEMA@/$schema/g"
}

debs=()
while IFS='|' read -r name port desc; do
  case "$name" in ''|'#'*) continue ;; esac
  for version in "${VERSIONS[@]}"; do
    pkg=convoy-demo-$name
    root=$work/$pkg-$version
    install -d "$root/DEBIAN" "$root/usr/lib/convoy-demo/$name" "$root/usr/share/convoy-demo-$name/www" \
      "$root/etc/convoy-demo" "$root/usr/share/doc/$pkg"
    render "$here/common/ctl.in" "$name" "$version" "$port" > "$root/usr/lib/convoy-demo/$name/ctl"
    chmod 0755 "$root/usr/lib/convoy-demo/$name/ctl"
    printf '%s %s ok\n' "$pkg" "$version" > "$root/usr/share/convoy-demo-$name/www/health"
    printf '%s\n' "$version" > "$root/usr/share/convoy-demo-$name/VERSION"
    case "$version" in
      1.*) printf '# convoy-demo-%s %s defaults (conffile; put changes in %s.local)\nport=%s\n' "$name" "$version" "$name" "$port" ;;
      *) printf '# convoy-demo-%s %s defaults (conffile; put changes in %s.local)\nlisten_port=%s\nworkers=2\n' "$name" "$version" "$name" "$port" ;;
    esac > "$root/etc/convoy-demo/$name.conf"
    printf 'convoy-demo-%s %s: demo package built by packaging/build-debs.sh.\n' "$name" "$version" > "$root/usr/share/doc/$pkg/README"
    for s in preinst postinst prerm postrm; do
      render "$here/common/$s.in" "$name" "$version" "$port" > "$root/DEBIAN/$s"
      chmod 0755 "$root/DEBIAN/$s"
    done
    echo "/etc/convoy-demo/$name.conf" > "$root/DEBIAN/conffiles"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: all
Maintainer: Convoy maintainers <convoy@example.invalid>
Installed-Size: $size
Depends: busybox
Section: misc
Priority: optional
Description: Convoy demo suite: $desc
 A tiny service answering GET /health on port $port with its version,
 used to exercise real package upgrades with Convoy.
CONTROL
    find "$root" -exec touch -h -t "$stamp" {} +
    deb="${pkg}_${version}_all.deb"
    dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/$deb" >/dev/null
    debs+=("$deb")
  done
done < "$here/suite.txt"

# The flat repository index (what dpkg-scanpackages would write).
cd "$out"
: > Packages
for deb in "${debs[@]}"; do
  dpkg-deb -f "$deb" >> Packages
  {
    echo "Filename: ./$deb"
    echo "Size: $(stat -c %s "$deb")"
    echo "MD5sum: $(md5sum "$deb" | cut -d' ' -f1)"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
  } >> Packages
done
gzip -9n < Packages > Packages.gz
{
  echo "Origin: convoy-demo"
  echo "Label: convoy-demo"
  echo "Date: $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
  echo "SHA256:"
  for f in Packages Packages.gz; do
    printf ' %s %s %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
  done
} > Release
echo "built ${#debs[@]} packages into $out"

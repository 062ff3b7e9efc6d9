#!/usr/bin/env bash
# Builds dist/build/mxguard_VERSION_amd64.deb from this source tree with
# go and dpkg-deb alone (no debhelper):
#
#   bash scripts/build-deb.sh [VERSION]
#
# VERSION defaults to 0.0~gitYYYYMMDD.HASH of the current commit. The
# package holds /usr/sbin/mxguard, the systemd unit, the default
# configuration and rule file (conffiles), a logrotate file, the man pages
# and the docs; its maintainer scripts are in dist/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."

commit_time=$(git log -1 --format=%ct 2>/dev/null || date +%s)
if [ $# -ge 1 ]; then
	version=$1
else
	version="0.0~git$(date -u -d "@$commit_time" +%Y%m%d).$(git rev-parse --short=8 HEAD 2>/dev/null || echo unknown)"
fi
if ! [[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
	echo "build-deb: bad version \"$version\": it must start with a digit (Debian policy 5.6.12)" >&2
	exit 2
fi
arch=amd64
maintainer=${MXGUARD_MAINTAINER:-"mxguard maintainers <mxguard@localhost>"}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$commit_time}

out=dist/build
root=$out/mxguard_${version}_$arch
rm -rf "$root"
mkdir -p "$root/DEBIAN"

# The binary: static, stripped (policy 10.1), no build paths, the version
# stamped in.
install -d -m 0755 "$root/usr/sbin"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "-s -w -X main.version=$version" \
	-o "$root/usr/sbin/mxguard" ./cmd/mxguard
chmod 0755 "$root/usr/sbin/mxguard"

install -D -m 0644 dist/mxguard.service "$root/lib/systemd/system/mxguard.service"
install -D -m 0644 dist/mxguard.toml "$root/etc/mxguard/mxguard.toml"
install -D -m 0644 dist/rules.d/local.toml "$root/etc/mxguard/rules.d/local.toml"
install -D -m 0644 dist/logrotate "$root/etc/logrotate.d/mxguard"

install -d -m 0755 "$root/usr/share/man/man8" "$root/usr/share/man/man5"
gzip -9nc dist/man/mxguard.8 >"$root/usr/share/man/man8/mxguard.8.gz"
gzip -9nc dist/man/mxguard.toml.5 >"$root/usr/share/man/man5/mxguard.toml.5.gz"

doc=$root/usr/share/doc/mxguard
install -D -m 0644 dist/debian/copyright "$doc/copyright"
install -m 0644 README.md "$doc/README.md"
install -D -m 0644 docs/mxguard.example.toml "$doc/examples/mxguard.example.toml"
go version -m "$root/usr/sbin/mxguard" | awk '$1 == "dep" || $1 == "=>" { print $2, $3 }' >"$doc/modules.txt"
chmod 0644 "$doc/modules.txt"
{
	echo "mxguard ($version) unstable; urgency=medium"
	echo
	echo "  * Built from commit $(git rev-parse HEAD 2>/dev/null || echo unknown)."
	echo
	echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

install -m 0644 dist/debian/conffiles "$root/DEBIAN/conffiles"
install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@MAINTAINER@/$maintainer/" \
	-e "s/@INSTALLED_SIZE@/$size/" dist/debian/control >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=$out/mxguard_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"

#!/bin/sh
# build-deb.sh: builds the Debian package of yavipin from this source tree.
#
#   packaging/build-deb.sh       build (cargo, release) and package; no root needed
#
# The package's files are exactly what install.sh installs, staged with DESTDIR and
# PREFIX=/usr, then made into an archive by dpkg-deb: the binaries (stripped), the unit,
# the sysusers.d file, the manuals (compressed), the shell completions and the example
# configuration, with the copyright file and changelog Debian requires (and the lintian
# overrides, each with its reason). The maintainer
# scripts in packaging/debian create the account yavipin with systemd-sysusers and the
# directory /etc/yavipin (mode 0700) on installation; removing the package keeps that
# directory, purging deletes it. Install the result with
#   apt install ./target/debian/yavipin_VERSION_ARCH.deb
#
# Environment:
#   SKIP_BUILD=1, YAVIPIN_BIN_DIR   as for install.sh: package binaries already built
#   DEB_OUT_DIR      where the package goes (default target/debian, or
#                    $CARGO_TARGET_DIR/debian)
#
# Needs dpkg-deb, dpkg-shlibdeps and dpkg-parsechangelog (dpkg-dev), strip (binutils).
set -eu

die() {
    echo "build-deb.sh: $*" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
debian=$here/debian

case "${1-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

for tool in dpkg-deb dpkg-shlibdeps dpkg-parsechangelog strip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev binutils)"
done

# The package version is the changelog's; its upstream part must be the workspace's.
version=$(dpkg-parsechangelog -l "$debian/changelog" -S Version)
crate_version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml")
[ "${version%-*}" = "$crate_version" ] ||
    die "packaging/debian/changelog is at $version, Cargo.toml at $crate_version: add a changelog entry"
arch=$(dpkg-deb --print-architecture 2>/dev/null || dpkg --print-architecture)
out_dir=${DEB_OUT_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debian}
deb=$out_dir/yavipin_${version}_$arch.deb

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Staged where dpkg-shlibdeps expects a package's files: debian/PACKAGE of a source tree.
root=$work/src/debian/yavipin

# The files, as install.sh installs them.
DESTDIR=$root PREFIX=/usr "$repo/install.sh" >/dev/null
# Made by postinst instead, so that dpkg never removes it with the package.
rmdir "$root/etc/yavipin" "$root/etc"

strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root/usr/sbin/yavipind" "$root/usr/bin/yavipin"
gzip -9n "$root"/usr/share/man/man*/*
docdir=$root/usr/share/doc/yavipin
install -m 0644 "$debian/copyright" "$docdir/copyright"
gzip -9nc "$debian/changelog" >"$docdir/changelog.Debian.gz"
chmod 0644 "$docdir/changelog.Debian.gz"
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 "$debian/lintian-overrides" "$root/usr/share/lintian/overrides/yavipin"

# The shared libraries the binaries need, as Debian dependencies. dpkg-shlibdeps reads
# the package's name from a debian/control, which this tree keeps elsewhere, and finds
# the package's root by its DEBIAN directory.
mkdir -p "$root/DEBIAN"
printf 'Source: yavipin\n\nPackage: yavipin\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O debian/yavipin/usr/sbin/yavipind debian/yavipin/usr/bin/yavipin)
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependency"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@INSTALLED_SIZE@|$installed_size|" \
    -e "s|@SHLIBS@|$shlibs|" "$debian/control" >"$root/DEBIAN/control"
for script in postinst prerm postrm; do
    install -m 0755 "$debian/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k 2) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out_dir"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"

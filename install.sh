#!/bin/sh
# install.sh: builds yavipin and installs it, or removes it with --uninstall.
#
#   ./install.sh                 build (cargo, release) and install into /usr; needs root
#   ./install.sh --uninstall     remove what install.sh installed
#
# cargo is usually not in root's PATH: build as yourself first, then install as root:
#   cargo build --release --locked -p yavipin-parent -p yavipin-cli
#   sudo SKIP_BUILD=1 ./install.sh
#
# Environment:
#   PREFIX           installation prefix (default /usr); /usr/local works too
#   DESTDIR          stage the files under this directory instead of / (for packaging);
#                    nothing outside it is touched: no account, no systemctl
#   SKIP_BUILD=1     do not build; install the binaries found in YAVIPIN_BIN_DIR
#   YAVIPIN_BIN_DIR  where the built binaries are (default: target/release, or
#                    $CARGO_TARGET_DIR/release)
#   UNITDIR          systemd unit directory (default $PREFIX/lib/systemd/system)
#   SYSUSERSDIR      sysusers.d directory (default $PREFIX/lib/sysusers.d)
#   BASHCOMPDIR      bash completions (default $PREFIX/share/bash-completion/completions)
#   ZSHCOMPDIR       zsh completions (default $PREFIX/share/zsh/vendor-completions for
#                    PREFIX=/usr, as Debian's zsh looks there, else $PREFIX/share/zsh/site-functions)
#   FISHCOMPDIR      fish completions (default $PREFIX/share/fish/vendor_completions.d)
#
# Installed: yavipind to $PREFIX/sbin, yavipin to $PREFIX/bin, the service
# yavipind@.service, the account definition yavipin.conf for systemd-sysusers, the
# manuals yavipind(8), yavipin(8) and yavipind.conf(5), yavipin's completions for bash, zsh
# and fish, the example configuration in $PREFIX/share/doc/yavipin, and the directory
# /etc/yavipin (mode 0700) for the tunnels' configurations and keys. Then, unless DESTDIR is set, the account yavipin is created.
set -eu

die() {
    echo "install.sh: $*" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd)

uninstall=0
case "${1-}" in
    "") ;;
    --uninstall) uninstall=1 ;;
    -h | --help)
        sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac
[ $# -le 1 ] || die "too many arguments (try --help)"

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
# PREFIX goes into a sed replacement and into the unit file: keep it a plain absolute path.
case "$PREFIX" in
    /*) ;;
    *) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
case "$PREFIX" in
    *[!A-Za-z0-9_./-]*) die "PREFIX may only hold letters, digits and _ . / - ('$PREFIX')" ;;
esac
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in
        /*) ;;
        *) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;;
    esac
fi

sbindir=$PREFIX/sbin
bindir=$PREFIX/bin
unitdir=${UNITDIR:-$PREFIX/lib/systemd/system}
sysusersdir=${SYSUSERSDIR:-$PREFIX/lib/sysusers.d}
mandir=$PREFIX/share/man
docdir=$PREFIX/share/doc/yavipin
bashcompdir=${BASHCOMPDIR:-$PREFIX/share/bash-completion/completions}
if [ "$PREFIX" = /usr ]; then
    zshcompdir=${ZSHCOMPDIR:-$PREFIX/share/zsh/vendor-completions}
else
    zshcompdir=${ZSHCOMPDIR:-$PREFIX/share/zsh/site-functions}
fi
fishcompdir=${FISHCOMPDIR:-$PREFIX/share/fish/vendor_completions.d}
confdir=/etc/yavipin

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root: run as root, or set DESTDIR to stage the files elsewhere"
fi

# The files, as "mode source destination" lines (destinations without DESTDIR).
files() {
    echo "0755 $bin_dir/yavipind $sbindir/yavipind"
    echo "0755 $bin_dir/yavipin $bindir/yavipin"
    echo "0644 $here/packaging/systemd/yavipind@.service $unitdir/yavipind@.service"
    echo "0644 $here/packaging/sysusers.d/yavipin.conf $sysusersdir/yavipin.conf"
    echo "0644 $here/man/yavipind.8 $mandir/man8/yavipind.8"
    echo "0644 $here/man/yavipin.8 $mandir/man8/yavipin.8"
    echo "0644 $here/man/yavipind.conf.5 $mandir/man5/yavipind.conf.5"
    echo "0644 $here/docs/example.toml $docdir/example.toml"
    echo "0644 $completions/bash $bashcompdir/yavipin"
    echo "0644 $completions/zsh $zshcompdir/_yavipin"
    echo "0644 $completions/fish $fishcompdir/yavipin.fish"
}

if [ "$uninstall" -eq 1 ]; then
    bin_dir=unused
    completions=unused
    files | while read -r _mode _source target; do
        if [ -e "$DESTDIR$target" ]; then
            rm -f "$DESTDIR$target"
            echo "removed $DESTDIR$target"
        fi
    done
    rmdir "$DESTDIR$docdir" 2>/dev/null || true
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload
    fi
    echo "kept: $DESTDIR$confdir (configurations and keys) and the account yavipin;"
    echo "remove them by hand if they are no longer needed (userdel yavipin)."
    exit 0
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    command -v cargo >/dev/null || die "cargo not found. Build as the user who has the Rust toolchain:
    cargo build --release --locked -p yavipin-parent -p yavipin-cli
then install as root with: SKIP_BUILD=1 ./install.sh"
    (cd "$here" && cargo build --release --locked -p yavipin-parent -p yavipin-cli)
fi
bin_dir=${YAVIPIN_BIN_DIR:-${CARGO_TARGET_DIR:-$here/target}/release}
for binary in yavipind yavipin; do
    [ -x "$bin_dir/$binary" ] || die "$bin_dir/$binary not found: build it with
    cargo build --release --locked -p yavipin-parent -p yavipin-cli
or point YAVIPIN_BIN_DIR at the directory holding yavipind and yavipin"
done

# The shell completions, generated by the yavipin just built from its own command line.
completions=$(mktemp -d)
trap 'rm -rf "$completions"' EXIT
for shell in bash zsh fish; do
    "$bin_dir/yavipin" completion "$shell" >"$completions/$shell" || die "$bin_dir/yavipin completion $shell failed"
done

# Every source must exist before anything is installed.
files | while read -r _mode source _target; do
    [ -f "$source" ] || die "$source is missing from the source tree"
done

files | while read -r mode source target; do
    install -d -m 0755 "$DESTDIR$(dirname "$target")"
    if [ "$target" = "$unitdir/yavipind@.service" ]; then
        # The unit names the daemon by its path: point it at this PREFIX.
        sed "s|/usr/sbin/yavipind|$sbindir/yavipind|g" "$source" >"$DESTDIR$target.tmp"
        chmod "$mode" "$DESTDIR$target.tmp"
        mv -f "$DESTDIR$target.tmp" "$DESTDIR$target"
    else
        install -m "$mode" "$source" "$DESTDIR$target"
    fi
    echo "installed $DESTDIR$target"
done

# Configurations and keys: root only.
install -d -m 0700 "$DESTDIR$confdir"
chmod 0700 "$DESTDIR$confdir"
echo "installed $DESTDIR$confdir (mode 0700)"

if [ -n "$DESTDIR" ]; then
    echo "DESTDIR is set: the account yavipin is not created (systemd-sysusers creates it"
    echo "from $sysusersdir/yavipin.conf on the target system)."
    exit 0
fi

# The workers' account.
if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$sysusersdir/yavipin.conf"
elif ! id yavipin >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin yavipin
fi
id yavipin >/dev/null 2>&1 || die "the account yavipin could not be created"
echo "account yavipin: $(id yavipin)"

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
fi

cat <<EOF

yavipin is installed. To set up the tunnel "home" (see yavipind(8), STEP-BY-STEP GUIDE):
    yavipin genkey $confdir/home.key        # then copy it to the peer securely
    cp $docdir/example.toml $confdir/home.toml   # and edit it
    yavipin check $confdir/home.toml
    systemctl enable --now yavipind@home
EOF

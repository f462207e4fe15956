#!/bin/sh
# Build the tandem Debian package with dpkg-deb alone (no debhelper, no
# cargo-deb, no fakeroot: --root-owner-group makes every file root:root).
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR] [--version V]
#
# --binary  the tandem binary to package (default target/release/tandem,
#           built with `cargo build --release --locked --bin tandem` if missing)
# --out     where tandem_<version>_<arch>.deb goes (default target/debian)
# --version the package version (default: Cargo.toml's, with a pre-release
#           "-rc.1" written "~rc.1" so that it sorts before the release)
#
# The binary must run on this machine: the man page and the completions come
# from `tandem man` and `tandem completions SHELL`. The architecture is
# `dpkg --print-architecture`. SOURCE_DATE_EPOCH (default: the last commit's
# time) fixes the files' times, so the same inputs give the same package.
# DEB_MAINTAINER sets the Maintainer field; DEB_COMPRESS the compression
# (dpkg-deb -Z: xz, the default, gzip, zstd or none).
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

binary=""
out="$repo/target/debian"
version=""

usage() {
    sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    --version) [ $# -ge 2 ] || usage; version="$2"; shift 2 ;;
    -h | --help) usage ;;
    *) echo "build-deb.sh: unknown argument '$1'" >&2; usage ;;
    esac
done

die() {
    echo "build-deb.sh: $*" >&2
    exit 1
}

command -v dpkg-deb >/dev/null || die "dpkg-deb is needed (apt-get install dpkg)"

if [ -z "$binary" ]; then
    binary="$repo/target/release/tandem"
    if [ ! -x "$binary" ]; then
        echo "build-deb.sh: $binary missing: cargo build --release --locked --bin tandem" >&2
        (cd "$repo" && cargo build --release --locked --bin tandem)
    fi
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    die "$binary: not an executable file"
fi

if [ -z "$version" ]; then
    # The first `version = "..."` of [package] in Cargo.toml.
    version="$(awk '
        /^\[/ { in_pkg = ($0 == "[package]") }
        in_pkg && /^version[ \t]*=/ { sub(/^[^"]*"/, ""); sub(/".*/, ""); print; exit }
    ' "$repo/Cargo.toml")"
    [ -n "$version" ] || die "no version in $repo/Cargo.toml"
    version="$(printf '%s' "$version" | sed 's/-/~/g')"
fi
# A native version: no revision (no '-'); must start with a digit.
printf '%s' "$version" | grep -Eq '^[0-9][A-Za-z0-9.+~]*$' ||
    die "version '$version' is not a valid Debian native version"

arch="$(dpkg --print-architecture)"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || true)"
    [ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH="$(date +%s)"
fi
export SOURCE_DATE_EPOCH

# Depends: from the shared libraries the binary needs.
libc_min=""
needs_gcc=""
if command -v readelf >/dev/null && command -v objdump >/dev/null; then
    for lib in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        case "$lib" in
        libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*.so.*) ;;
        libgcc_s.so.1) needs_gcc=1 ;;
        *) die "the binary needs $lib: add its package to Depends in build-deb.sh" ;;
        esac
    done
    libc_min="$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n 1)"
else
    echo "build-deb.sh: readelf/objdump (binutils) missing: Depends without versions" >&2
    needs_gcc=1
fi
depends="libc6"
[ -z "$libc_min" ] || depends="libc6 (>= $libc_min)"
[ -z "$needs_gcc" ] || depends="$depends, libgcc-s1"
# useradd/groupadd in the postinst.
depends="$depends, passwd"

umask 022
work="$(mktemp -d "${TMPDIR:-/tmp}/tandem-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT INT TERM
root="$work/root"

# put MODE SRC DEST: copy SRC to $root/DEST with MODE.
put() {
    mkdir -p "$(dirname "$root/$3")"
    cp "$2" "$root/$3"
    chmod "$1" "$root/$3"
}

put 0755 "$binary" usr/bin/tandem
put 0644 "$here/tandem.service" lib/systemd/system/tandem.service
put 0640 "$here/tandem.toml" etc/tandem/tandem.toml

mkdir -p "$root/usr/share/man/man8"
"$binary" man >"$work/tandem.8" || die "$binary man failed"
[ -s "$work/tandem.8" ] || die "$binary man printed nothing"
gzip -9n -c "$work/tandem.8" >"$root/usr/share/man/man8/tandem.8.gz"
chmod 0644 "$root/usr/share/man/man8/tandem.8.gz"

for shell in bash zsh fish; do
    "$binary" completions "$shell" >"$work/completion.$shell" || die "$binary completions $shell failed"
    [ -s "$work/completion.$shell" ] || die "$binary completions $shell printed nothing"
done
put 0644 "$work/completion.bash" usr/share/bash-completion/completions/tandem
put 0644 "$work/completion.zsh" usr/share/zsh/vendor-completions/_tandem
put 0644 "$work/completion.fish" usr/share/fish/vendor_completions.d/tandem.fish

put 0644 "$here/copyright" usr/share/doc/tandem/copyright
for f in "$repo"/examples/*.toml; do
    put 0644 "$f" "usr/share/doc/tandem/examples/$(basename "$f")"
done

# Control files.
mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do
    put 0755 "$here/debian/$s" "DEBIAN/$s"
done
printf '/etc/tandem/tandem.toml\n' >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print |
    sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<EOF
Package: tandem
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-tandem maintainers <tandem@localhost>}
Installed-Size: $installed_size
Depends: $depends
Section: net
Priority: optional
Description: DHCPv6 server with RFC 8156 failover
 tandem serves DHCPv6 addresses (IA_NA) and delegated prefixes (IA_PD)
 from thread-per-core shards, and replies only after each lease is durable
 in its LMDB store. Two servers can share one address and prefix space with
 the DHCPv6 Failover Protocol (RFC 8156) over mutually authenticated TLS,
 and coordinate DNS updates (RFC 4703/4704, TSIG).
 .
 The package installs the server, a hardened systemd unit (not enabled:
 edit /etc/tandem/tandem.toml first), the tandem(8) manual page and shell
 completions. It creates the system user tandem and the lease store
 /var/lib/tandem, which is kept even on purge.
EOF
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb="$out/tandem_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"

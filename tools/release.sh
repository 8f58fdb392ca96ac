#!/usr/bin/env bash
# Builds meteord's release artefacts into target/dist/ and prints their sizes:
#
#   meteord-x86_64    static (musl), stripped   x86_64-unknown-linux-musl
#   meteord-aarch64   static (musl), stripped   aarch64-unknown-linux-musl
#   meteord-armv7     static (musl), stripped   armv7-unknown-linux-musleabihf
#                                                (ARMv7-A, hard-float)
#   meteord_<version>_amd64.deb                 the x86_64 binary, the
#                                                configuration, meteor.js, the
#                                                systemd unit and meteord(8)
#
# Toolchain (tools/ci_release.sh installs it all):
#   rustup targets x86_64-unknown-linux-musl and aarch64-unknown-linux-musl,
#   and the rust-src component;
#   Debian: gcc (x86_64 linker), gcc-aarch64-linux-gnu (aarch64 linker),
#   gcc-arm-linux-gnueabihf (armv7 linker), musl-dev:armhf (armv7 C library),
#   dpkg-dev, file.
# x86_64 and aarch64 link Rust's own musl (the start files and libc.a its
# targets ship, "self-contained") with Debian's gcc as the linker driver.
# Rust ships no prebuilt standard library for armv7-unknown-linux-musleabihf
# that rustup can fetch here, so this script builds it from rust-src
# (cargo -Zbuild-std, allowed on the stable compiler by RUSTC_BOOTSTRAP=1)
# and links it against Debian's musl for armhf (crt1.o, crti.o, crtn.o,
# libc.a), with gcc-arm-linux-gnueabihf's crtbegin.o/crtend.o and its
# libgcc_eh.a as the unwinder libunwind.a (only backtraces use it: the
# release profile aborts on panic).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found: apt-get install $2"; }
need cargo "the Rust toolchain (rustup)"
need gcc gcc
need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
need arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf
need dpkg-deb dpkg
need file file

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
dist=target/dist
rm -rf "$dist"
mkdir -p "$dist"

# --- x86_64 and aarch64: Rust's musl, Debian's gcc as the linker ---------
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
cargo build --release --locked -p meteord \
	--target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl
cp target/x86_64-unknown-linux-musl/release/meteord "$dist/meteord-x86_64"
cp target/aarch64-unknown-linux-musl/release/meteord "$dist/meteord-aarch64"

# --- armv7 hard-float: std from rust-src, Debian's musl for armhf --------
musl_armhf=/usr/lib/arm-linux-musleabihf
[ -f "$musl_armhf/libc.a" ] ||
	die "$musl_armhf/libc.a missing: dpkg --add-architecture armhf && apt-get update && apt-get install musl-dev:armhf"
gcc_armhf=$(dirname "$(arm-linux-gnueabihf-gcc -print-libgcc-file-name)")
sysroot=$PWD/target/armv7-musl-link
rm -rf "$sysroot"
mkdir -p "$sysroot"
cp "$musl_armhf"/{crt1.o,crti.o,crtn.o,Scrt1.o,rcrt1.o,libc.a} "$sysroot/"
cp "$gcc_armhf"/{crtbegin.o,crtend.o,crtbeginS.o,crtendS.o} "$sysroot/"
cp "$gcc_armhf/libgcc_eh.a" "$sysroot/libunwind.a"
# rustc looks for the start files and -lc, -lunwind in the -L directories.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-L native=$sysroot"
RUSTC_BOOTSTRAP=1 cargo build --release --locked -p meteord \
	-Zbuild-std=std,panic_abort --target armv7-unknown-linux-musleabihf
cp target/armv7-unknown-linux-musleabihf/release/meteord "$dist/meteord-armv7"

for arch in x86_64 aarch64 armv7; do
	info=$(file -b "$dist/meteord-$arch")
	case "$info" in
	*"statically linked"*stripped* | *"static-pie linked"*stripped*) ;;
	*) die "meteord-$arch is not static and stripped: $info" ;;
	esac
	case "$info" in *"not stripped"*) die "meteord-$arch is not stripped: $info" ;; esac
done

# --- The Debian package ---------------------------------------------------
deb="$dist/meteord_${version}_amd64.deb"
root=target/deb/meteord
rm -rf target/deb
mkdir -p "$root/DEBIAN" "$root/usr/sbin" "$root/etc" \
	"$root/usr/share/meteord/public_html" "$root/usr/share/man/man8" \
	"$root/usr/share/doc/meteord" "$root/lib/systemd/system"
# Timestamps from the last commit, so that a rebuild gives the same package.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

install -m 0755 "$dist/meteord-x86_64" "$root/usr/sbin/meteord"
# The package's settings, then the subscriber modes of meteor.conf (its
# paragraphs from the first [mode] section on).
{
	cat tools/debian/meteord.conf
	awk 'BEGIN { RS = ""; ORS = "\n\n" } modes || /(^|\n)\[/ { modes = 1; print }' meteor.conf
} >"$root/etc/meteord.conf"
grep -q '^\[websocket\]' "$root/etc/meteord.conf" || die "no modes copied from meteor.conf"
chmod 0644 "$root/etc/meteord.conf"
install -m 0644 public_html/meteor.js "$root/usr/share/meteord/public_html/meteor.js"
install -m 0644 tools/debian/meteord.service "$root/lib/systemd/system/meteord.service"
# meteord(8) from the binary's own key table (-man), as -help prints it.
"$root/usr/sbin/meteord" -man | gzip -9n >"$root/usr/share/man/man8/meteord.8.gz"
install -m 0644 tools/debian/copyright "$root/usr/share/doc/meteord/copyright"
maintainer=$(sed -n 's/^Maintainer: //p' tools/debian/control)
{
	printf 'meteord (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Release %s: static binary, systemd unit, meteord(8).\n\n' "$version"
	printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$root/usr/share/doc/meteord/changelog.gz"
chmod 0644 "$root/usr/share/doc/meteord/changelog.gz" "$root/usr/share/man/man8/meteord.8.gz"

for script in postinst prerm postrm; do
	install -m 0755 "tools/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/meteord.conf >"$root/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
	tools/debian/control >"$root/DEBIAN/control"
(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null

echo "release.sh: meteord $version in $dist/ (bytes):"
for f in "$dist"/meteord-x86_64 "$dist"/meteord-aarch64 "$dist"/meteord-armv7 "$deb"; do
	printf '  %-34s %9d  %s\n' "$(basename "$f")" "$(stat -c %s "$f")" \
		"$(file -b "$f" | cut -d, -f1-2)"
done

#!/usr/bin/env bash
# Release CI (issue 15), run by .ci/run after the main test command, as root
# on Debian:
#   1. installs the cross toolchain (Debian's cross gcc, musl for armhf,
#      qemu-user, lintian; rustup's musl targets and rust-src);
#   2. builds the static binaries and the Debian package (tools/release.sh);
#   3. runs the classic-contract suites (part A of the wire contract) against
#      each static binary: x86_64 natively, aarch64 and armv7 under qemu
#      user-mode emulation, through the harness's METEORD_TEST_BINARY;
#   4. checks the package with lintian (no errors), installs it, runs the
#      installed binary as the unit does (its ExecStart line, as the meteord
#      user) with the installed configuration, checks that it serves
#      documents, publishes and subscribers, stops it, purges the package and
#      checks that its files, state and user are gone.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== ci_release: %s\n' "$*"; }
fail() {
	echo "ci_release: FAILED: $*" >&2
	exit 1
}

step "toolchain"
dpkg --add-architecture armhf
apt-get update -q
apt-get install -y -q gcc gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
	musl-dev:armhf qemu-user lintian file curl adduser
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
rustup component add rust-src

step "build (tools/release.sh)"
tools/release.sh
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=target/dist/meteord_${version}_amd64.deb

# The suites of part A (the classic contract): listeners, controller
# protocol, messages and channels, subscriber requests, templates and modes,
# timers, static documents, configuration, signals and process. Measured
# under qemu on a 2-core machine: about 1 minute per architecture.
suites=(controller subscriber channels templates formats timers documents
	config signals operations udp fanout)
test_args=()
for suite in "${suites[@]}"; do
	test_args+=(--test "$suite")
done
cargo test -q --no-run -p meteord "${test_args[@]}"
for run in x86_64: aarch64:qemu-aarch64 armv7:qemu-arm; do
	arch=${run%%:*}
	emulator=${run#*:}
	binary=$PWD/target/dist/meteord-$arch
	step "classic suites against meteord-$arch${emulator:+ under $emulator}"
	# shellcheck disable=SC2086 # an empty emulator is no word
	$emulator "$binary" -v
	METEORD_TEST_BINARY="$emulator $binary" cargo test -p meteord "${test_args[@]}"
done

step "lintian"
lintian --fail-on error --pedantic --info "$deb"

step "install $deb"
if dpkg -s meteord >/dev/null 2>&1; then
	apt-get purge -y -q meteord
fi
apt-get install -y -q "./$deb"
files=(/usr/sbin/meteord /etc/meteord.conf /usr/share/meteord/public_html/meteor.js
	/lib/systemd/system/meteord.service /usr/share/man/man8/meteord.8.gz
	/usr/share/doc/meteord/copyright)
for f in "${files[@]}"; do
	[ -f "$f" ] || fail "$f not installed"
done
grep -qx /etc/meteord.conf /var/lib/dpkg/info/meteord.conffiles || fail "/etc/meteord.conf is no conffile"
getent passwd meteord >/dev/null || fail "no system user meteord"
[ "$(stat -c %U /var/lib/meteord)" = meteord ] || fail "/var/lib/meteord not owned by meteord"
zcat /usr/share/man/man8/meteord.8.gz | grep -q '^\.BI \\-StateFile ' || fail "meteord(8) lacks StateFile"
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify --man=no /lib/systemd/system/meteord.service
fi

step "run the installed server as its unit does"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/meteord.service)
read -ra command <<<"$exec_start"
# The configured ports, unless something on this machine holds them.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
sub_port=4670
ctl_port=4671
if ! port_free $sub_port || ! port_free $ctl_port; then
	sub_port=24670
	ctl_port=24671
	command+=(-SubscriberPort $sub_port -ControllerPort $ctl_port)
fi
log=$(mktemp)
setpriv --reuid=meteord --regid=meteord --init-groups -- "${command[@]}" >"$log" 2>&1 &
server=$!
stop_server() { kill "$server" 2>/dev/null || true; }
trap stop_server EXIT
for _ in $(seq 100); do
	curl -sf -o /dev/null "http://127.0.0.1:$sub_port/meteor.js" && break
	kill -0 "$server" 2>/dev/null || {
		cat "$log"
		fail "the installed server exited"
	}
	sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$sub_port/meteor.js" || {
	cat "$log"
	fail "meteor.js not served within 10 s"
}
# The demo is off: no page at /.
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$sub_port/")
[ "$status" = 404 ] || fail "/ answered $status, not 404 (demo page installed?)"
exec 3<>"/dev/tcp/127.0.0.1/$ctl_port"
printf 'ADDMESSAGE ci hello from the package\r\n' >&3
read -r -t 5 reply <&3 || fail "no reply to ADDMESSAGE"
exec 3>&-
reply=${reply%$'\r'}
[[ $reply =~ ^OK[[:space:]]+([0-9]+)$ ]] || fail "ADDMESSAGE answered '$reply'"
id=${BASH_REMATCH[1]}
body=$(curl -s --max-time 5 "http://127.0.0.1:$sub_port/push/ci1/smartpoll/ci.b1")
[[ $body == *"p($id,\"ci\",\"hello from the package\");"* ]] ||
	fail "the subscriber got '$body'"
[ -f /var/lib/meteord/meteord.state ] || fail "no state file in /var/lib/meteord"
kill -TERM "$server"
wait "$server" || fail "the installed server exited $? on SIGTERM"
trap - EXIT
echo "served meteor.js, 404 at /, published id $id and read it back; its log:"
cat "$log"
rm -f "$log"

step "purge"
apt-get purge -y -q meteord
for f in "${files[@]}" /var/lib/meteord /etc/systemd/system/multi-user.target.wants/meteord.service; do
	[ ! -e "$f" ] || fail "$f is still there after purge"
done
! getent passwd meteord >/dev/null || fail "user meteord is still there after purge"
! dpkg -s meteord >/dev/null 2>&1 || fail "meteord still known to dpkg"
echo "ci_release: every release check passed"

#!/usr/bin/env bash
# Builds the Debian package, installs it on this machine, checks what it
# installed, then removes and purges it and checks that it is gone. As root,
# on Debian, with mxguard not installed:
#
#   bash scripts/test-deb.sh [VERSION | FILE.deb]
#
# Given a .deb (built by scripts/build-deb.sh as another user, where go is),
# it tests that instead of building one.
#
# It works with systemd as PID 1 or without (a container, a CI machine):
# then the unit is enabled but not started. The user mxguard stays after the
# purge, as Debian practice wants.
set -euo pipefail
cd "$(dirname "$0")/.."

arg=${1:-0.0~test1}
fail() {
	echo "test-deb: FAIL: $*" >&2
	exit 1
}
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	"$@" >/dev/null 2>&1 || fail "$what ($*)"
	echo "ok: $what"
}
installed() { dpkg-query -W -f '${db:Status-Status}' mxguard 2>/dev/null; }

# boot_check runs the installed unit under a systemd of its own, in new PID,
# mount, cgroup, UTS and IPC namespaces (systemd cannot see or signal the
# machine's processes, and its /run is private), for machines where systemd
# is not PID 1: it starts mxguard.service as the package left it, checks the
# notifications, a reload, logrotate and the stop, then powers that systemd
# off. Skipped without systemd or namespaces, with port 25 taken, or with
# MXGUARD_DEB_BOOT=0.
boot_check() {
	if [ "${MXGUARD_DEB_BOOT:-1}" = 0 ] || [ ! -x /lib/systemd/systemd ] || ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null; then
		echo "skip: the service under systemd (MXGUARD_DEB_BOOT=0, or no systemd, unshare or nsenter)"
		return
	fi
	if ! unshare --pid --fork --mount --uts --ipc --cgroup --mount-proc true 2>/dev/null; then
		echo "skip: the service under systemd (no new namespaces here: an unprivileged container?)"
		return
	fi
	if ss -Hltn 'sport = :25' 2>/dev/null | grep -q .; then
		echo "skip: the service under systemd (port 25 is taken)"
		return
	fi
	unshare --pid --fork --mount --uts --ipc --cgroup --mount-proc bash -c '
		mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system/mxguard.service.d /run/lock
		printf "[Unit]\nDefaultDependencies=no\nWants=mxguard.service\n" >/run/systemd/system/mxtest.target
		printf "[Unit]\nDefaultDependencies=no\n" >/run/systemd/system/mxguard.service.d/test.conf
		exec env container=mxtest /lib/systemd/systemd --system --unit=mxtest.target --log-target=null
	' >/dev/null 2>&1 &
	local upid=$! pid="" i
	for i in $(seq 50); do
		pid=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null | awk '{print $1}')
		[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] || pid=""
		[ -n "$pid" ] && break
		sleep 0.2
	done
	[ -n "$pid" ] || fail "systemd did not start in its namespaces"
	sd() { nsenter -t "$pid" -a "$@"; }
	prop() { sd systemctl show -P "$1" mxguard.service; }
	for i in $(seq 300); do # up to a minute: a loaded machine (CI) starts slowly
		case $(prop ActiveState) in active | failed) break ;; esac
		sleep 0.2
	done
	if [ "$(prop ActiveState)" != active ]; then # say why before failing
		sd systemctl status --no-pager mxguard.service || true
		sd journalctl --no-pager -n 50 -u mxguard.service || true
	fi
	check "systemd started mxguard.service (Type=notify: READY=1)" test "$(prop ActiveState)" = active
	check "its status says where it listens" grep -q '^listening on :25$' <(prop StatusText)
	check "it runs as mxguard" test "$(sd stat -c %U "/proc/$(prop MainPID)")" = mxguard
	check "it answers on port 25" bash -c 'exec 3<>/dev/tcp/127.0.0.1/25 && read -t 10 -r line <&3 && [[ $line == 220* ]]'
	sd systemctl reload mxguard.service
	# ExecReload's kill returns at once; the status follows mxguard's READY=1.
	for i in $(seq 25); do [ "$(prop StatusText)" = "reloaded /etc/mxguard/mxguard.toml" ] && break; sleep 0.2; done
	check "systemctl reload (RELOADING=1, READY=1)" grep -q '^reloaded /etc/mxguard/mxguard.toml$' <(prop StatusText)
	if command -v logrotate >/dev/null; then
		sd logrotate -f /etc/logrotate.d/mxguard
		for i in $(seq 25); do [ -s /var/log/mxguard/mxguard.log ] && break; sleep 0.2; done
		check "logrotate rotated the log" test -s /var/log/mxguard/mxguard.log.1
		check "and mxguard reopened it (SIGHUP)" grep -q '"msg":"reloaded"' /var/log/mxguard/mxguard.log
		check "mxguard log reads both" test "$(/usr/sbin/mxguard log -all /var/log/mxguard/mxguard.log /var/log/mxguard/mxguard.log.1 | grep -c 'STARTED\|RELOADED')" -ge 3
	fi
	sd systemctl stop mxguard.service
	check "systemctl stop (STOPPING=1, exit 0)" test "$(prop Result) $(prop ExecMainStatus)" = "success 0"
	sd systemctl poweroff >/dev/null 2>&1 || true
	for i in $(seq 50); do kill -0 "$upid" 2>/dev/null || break; sleep 0.2; done
	kill "$upid" 2>/dev/null || true
	wait "$upid" 2>/dev/null || true
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs the package)"
case $(installed) in "" | not-installed) ;; *) fail "mxguard is installed already (dpkg -P mxguard first)" ;; esac
trap 'case $(installed) in "" | not-installed) ;; *) echo "test-deb: purging after a failure" >&2; dpkg -P mxguard >/dev/null 2>&1 || true ;; esac' EXIT

if [[ $arg == *.deb ]]; then
	deb=$arg
	version=$(dpkg-deb -f "$deb" Version)
else
	version=$arg
	deb=$(bash scripts/build-deb.sh "$version")
	echo "built $deb"
fi
check "the package's name" test "$(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')" = "Package: mxguard Version: $version Architecture: amd64 "
check "its files are root's" test -z "$(dpkg-deb --contents "$deb" | awk '$2 != "root/root"')"

dpkg -i "$deb"
check "installed" test "$(installed)" = installed
check "the binary's version" grep -q "mxguard $version" <(/usr/sbin/mxguard version)
check "the default configuration passes check-config" /usr/sbin/mxguard check-config -config /etc/mxguard/mxguard.toml
check "its log goes to /var/log/mxguard" grep -q '^ *path = "/var/log/mxguard/mxguard.log"' <(/usr/sbin/mxguard check-config -config /etc/mxguard/mxguard.toml)
check "the conffiles" test "$(dpkg-query -W -f '${Conffiles}' mxguard | awk '{print $1}' | tr '\n' ' ')" = "/etc/mxguard/mxguard.toml /etc/mxguard/rules.d/local.toml /etc/logrotate.d/mxguard "
check "the system user mxguard" test "$(getent passwd mxguard | cut -d: -f6,7)" = "/var/lib/mxguard:/usr/sbin/nologin"
check "a system uid" test "$(id -u mxguard)" -lt 1000
check "the group mxguard" getent group mxguard
for d in /var/lib/mxguard /var/log/mxguard; do
	check "$d is mxguard's, 0750" test "$(stat -c '%U:%G %a' $d)" = "mxguard:mxguard 750"
done
check "the unit" test -f /lib/systemd/system/mxguard.service
check "the unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/mxguard.service
check "the man pages" test -f /usr/share/man/man8/mxguard.8.gz -a -f /usr/share/man/man5/mxguard.toml.5.gz
if command -v systemd-analyze >/dev/null; then
	check "systemd-analyze verify mxguard.service" systemd-analyze verify /lib/systemd/system/mxguard.service
fi
if command -v man >/dev/null; then
	check "man mxguard" man -w mxguard
	check "man mxguard.toml" man -w 5 mxguard.toml
fi
if command -v logrotate >/dev/null; then
	check "logrotate -d /etc/logrotate.d/mxguard" logrotate -d /etc/logrotate.d/mxguard
fi
if [ -d /run/systemd/system ]; then
	check "the service runs" systemctl is-active --quiet mxguard.service
else
	boot_check
fi

dpkg -r mxguard
check "removed" test "$(installed)" = config-files
check "the binary is gone" test ! -e /usr/sbin/mxguard
check "the unit is gone" test ! -e /lib/systemd/system/mxguard.service
check "the configuration stays until purge" test -f /etc/mxguard/mxguard.toml

dpkg -P mxguard
check "purged" test -z "$(dpkg-query -W -f '${db:Status-Status}' mxguard 2>/dev/null | grep -v not-installed)"
for p in /etc/mxguard /etc/logrotate.d/mxguard /var/lib/mxguard /var/log/mxguard \
	/etc/systemd/system/mxguard.service /etc/systemd/system/multi-user.target.wants/mxguard.service \
	/usr/share/doc/mxguard /usr/share/man/man8/mxguard.8.gz; do
	check "$p is gone" test ! -e "$p" -a ! -L "$p"
done
check "the user mxguard stays" getent passwd mxguard
echo "test-deb: PASS ($deb)"

#!/usr/bin/env bash
# Installs the real MTAs the end-to-end tests (./e2e, ./internal/realmta) put
# mxguard in front of. Idempotent; run as root on Debian 12.
#
#   - Postfix, from apt, with no system configuration and its system service
#     stopped and disabled: the tests run private instances on loopback high
#     ports and never touch port 25.
#   - Exim's heavy daemon (the only Debian build with PROXY protocol support),
#     downloaded and unpacked with dpkg -x under $EXIM_DIR, NOT installed:
#     Debian's exim4 packages conflict with postfix.
#   - swaks, for talking to either by hand.
#
# Environment: EXIM_DIR (default /opt/mxguard-test/exim).
set -euo pipefail

EXIM_DIR=${EXIM_DIR:-/opt/mxguard-test/exim}
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
	echo "install-test-mtas.sh: must run as root" >&2
	exit 1
fi

log() { echo "install-test-mtas: $*"; }

apt_updated=
apt_update() {
	if [ -z "$apt_updated" ]; then
		apt-get update -qq
		apt_updated=1
	fi
}

# --- Postfix and swaks --------------------------------------------------------
need=()
for p in postfix swaks bsdutils; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	apt_update
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	log "installing ${need[*]}"
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# The system instance must not run (it would want port 25): we only run
# private instances with their own configuration directories.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now postfix.service >/dev/null 2>&1 || true
	systemctl disable --now postfix@-.service >/dev/null 2>&1 || true
fi
if command -v update-rc.d >/dev/null 2>&1; then
	update-rc.d postfix disable >/dev/null 2>&1 || true
fi
if [ -f /etc/postfix/main.cf ] && postfix status >/dev/null 2>&1; then
	log "stopping the system postfix instance"
	postfix stop >/dev/null 2>&1 || true
fi
if [ -f /var/spool/postfix/pid/master.pid ]; then
	pid=$(tr -d ' ' </var/spool/postfix/pid/master.pid || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q master "/proc/$pid/comm" 2>/dev/null; then
		log "stopping the system postfix master (pid $pid)"
		kill "$pid" || true
	fi
fi

# --- Exim (heavy daemon, unpacked only) ----------------------------------------
exim_bin="$EXIM_DIR/usr/sbin/exim4"
want_version=$(apt-cache policy exim4-daemon-heavy 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$want_version" ] || [ "$want_version" = "(none)" ]; then
	apt_update
	want_version=$(apt-cache policy exim4-daemon-heavy | awk '/Candidate:/ {print $2}')
fi
have_version=$(cat "$EXIM_DIR/.version" 2>/dev/null || true)
if [ ! -x "$exim_bin" ] || [ "$have_version" != "$want_version" ] || [ ! -s "$EXIM_DIR/.depends" ]; then
	log "fetching exim4-daemon-heavy $want_version"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	chmod 755 "$tmp"
	chown _apt "$tmp" 2>/dev/null || true # apt-get download runs as _apt when it can
	if ! (cd "$tmp" && apt-get download -q "exim4-daemon-heavy=$want_version"); then
		# Stale package lists name a version the mirror no longer has.
		apt_update
		want_version=$(apt-cache policy exim4-daemon-heavy | awk '/Candidate:/ {print $2}')
		(cd "$tmp" && apt-get download -q "exim4-daemon-heavy=$want_version")
	fi
	rm -rf "$EXIM_DIR"
	mkdir -p "$EXIM_DIR"
	dpkg -x "$tmp"/exim4-daemon-heavy_*.deb "$EXIM_DIR"
	dpkg-deb -f "$tmp"/exim4-daemon-heavy_*.deb Depends >"$EXIM_DIR/.depends"
	echo "$want_version" >"$EXIM_DIR/.version"
fi

# The binary looks its compiled-in user up before it reads any
# configuration: exim4-base's postinst would create it.
if ! getent passwd Debian-exim >/dev/null; then
	log "creating the Debian-exim system user"
	useradd --system --user-group --no-create-home --home-dir /var/spool/exim4 \
		--shell /usr/sbin/nologin Debian-exim
fi

# Its shared libraries: the package's library dependencies that are not
# installed yet (libmariadb3, libspf2-2 and more on a bare machine; they
# conflict with nothing). Installed ones are left alone, not upgraded.
missing_libs() { ldd "$exim_bin" | awk '/not found/ {print $1}'; }
if [ -n "$(missing_libs)" ]; then
	pkgs=()
	for d in $(tr ',' '\n' <"$EXIM_DIR/.depends" | sed 's/(.*)//; s/|.*//' | awk '{print $1}'); do
		case "$d" in
		exim4-base | debconf | debconf-2.0 | "") continue ;; # exim4-base would remove postfix
		esac
		dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "ok installed" || pkgs+=("$d")
	done
	if [ ${#pkgs[@]} -gt 0 ]; then
		apt_update
		log "installing libraries for exim: ${pkgs[*]}"
		apt-get install -y -q --no-install-recommends "${pkgs[@]}"
	fi
fi
if [ -n "$(missing_libs)" ]; then
	echo "install-test-mtas.sh: exim still misses libraries: $(missing_libs | tr '\n' ' ')" >&2
	exit 1
fi
conf=$(mktemp)
printf 'exim_user = mail\nexim_group = mail\nprimary_hostname = exim.test\nkeep_environment =\n' >"$conf"
if ! "$exim_bin" -C "$conf" -bV 2>/dev/null | grep -q "^Support for:.* PROXY"; then
	"$exim_bin" -C "$conf" -bV >&2 || true
	rm -f "$conf"
	echo "install-test-mtas.sh: $exim_bin does not list PROXY support" >&2
	exit 1
fi
exim_version=$("$exim_bin" -C "$conf" -bV 2>/dev/null | awk 'NR==1 {print $3}')
rm -f "$conf"

postfix_version=$(postconf -d -h mail_version 2>/dev/null || echo "?")
echo "postfix: $(command -v postfix) (Postfix $postfix_version, package $(dpkg-query -W -f='${Version}' postfix))"
echo "postconf: $(command -v postconf)"
echo "exim: $exim_bin (Exim $exim_version, package exim4-daemon-heavy $want_version, unpacked, not installed)"
echo "swaks: $(command -v swaks)"

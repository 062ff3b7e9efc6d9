#!/usr/bin/env bash
# Installs everything the test suite talks to, as Debian packages: the real
# MTAs (install-test-mtas.sh), redis-server (the shared state store),
# chromium (the admin page's browser test), and what the Debian package's
# test uses (man-db and groff for the man pages, logrotate, adduser,
# systemd for systemd-analyze and a private systemd). Only what is missing
# is installed. Idempotent; run as root on Debian 12.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
	echo "install-test-deps.sh: must run as root" >&2
	exit 1
fi
cd "$(dirname "$0")"
bash ./install-test-mtas.sh

need=()
for p in redis-server chromium groff-base man-db logrotate adduser systemd netcat-openbsd; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "install-test-deps: installing ${need[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The tests start their own redis-server on loopback high ports; the
# system's own instance is not needed.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
	systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
echo "install-test-deps: redis-server $(redis-server --version | awk '{print $3}'), $(chromium --version 2>/dev/null || echo 'chromium ?')"

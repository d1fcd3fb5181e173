#!/bin/sh
# Debian packages the test suite and the daemon's optional parts need. Idempotent; root only.
set -eu
PACKAGES="python3-venv systemd systemd-container debootstrap libsystemd-dev pkg-config logrotate
    tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert tesseract-ocr-eng fonts-noto-cjk
    rsyslog rsyslog-gnutls openssl"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: not root or no apt-get; assuming these are installed: $PACKAGES" >&2
    exit 0
fi
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing

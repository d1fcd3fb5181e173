#!/bin/sh
# Debian packages the daemon needs (`system-deps.sh run`: the embedded default, for `make run`) or the
# test suite, `make deb` (lintian; dpkg-deb comes with dpkg) and the daemon's optional parts need (no
# argument). Idempotent; root only.
set -eu
PACKAGES="python3-venv tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert tesseract-ocr-eng"
if [ "${1:-all}" != run ]; then
    PACKAGES="$PACKAGES systemd systemd-container debootstrap libsystemd-dev pkg-config logrotate
    fonts-noto-cjk rsyslog rsyslog-gnutls openssl lintian prometheus redis-server default-jre-headless
    gcc python3-dev"
fi
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

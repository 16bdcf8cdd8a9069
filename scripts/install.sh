#!/usr/bin/env bash
# Installs doorbell from this source tree on the Pi, or on any Debian system,
# in the same places as the Debian package (docs/install.md, "From source on
# the Pi"): builds the release binary (installing the Debian packages and Rust
# it needs first), then installs /usr/bin/doorbell, the systemd unit, the
# example config as /etc/doorbell/doorbell.toml when there is none yet, and
# runs the package's postinst (the doorbell user in gpio, video, audio; the
# permissions; daemon-reload). Running it again upgrades; the config is never
# overwritten, and a running service is restarted onto the new binary.
#
#   scripts/install.sh            as your user; sudo for the system parts
#   scripts/install.sh --enable   ... then systemctl enable --now doorbell
#
# The build uses $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

enable=0
for arg in "$@"; do
    case "$arg" in
        --enable) enable=1 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "doorbell: scripts/install.sh: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

if dpkg-query -W -f='${Status}' doorbell 2>/dev/null | grep -q "install ok installed"; then
    echo "doorbell: the Debian package doorbell is installed and owns these files;" \
         "upgrade it with a newer .deb, or remove it (apt remove doorbell) before installing from source" >&2
    exit 1
fi

setup_deps
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-target}/release/doorbell"

previous=""
if [ -x /usr/bin/doorbell ]; then
    previous=$(/usr/bin/doorbell --version 2>/dev/null | awk '{ print $2 }') || previous=unknown
    previous=${previous:-unknown}
fi

# Stripped like the package's. Beside, then renamed over: a running doorbell
# keeps its old binary until it is restarted.
$sudo install -D -s -m 0755 "$bin" /usr/bin/doorbell.new
$sudo mv -f /usr/bin/doorbell.new /usr/bin/doorbell
$sudo install -D -m 0644 systemd/doorbell.service /usr/lib/systemd/system/doorbell.service
if [ ! -e /etc/doorbell/doorbell.toml ]; then
    $sudo install -D -m 0640 assets/doorbell.example.toml /etc/doorbell/doorbell.toml
    echo "doorbell: installed the example config as /etc/doorbell/doorbell.toml: edit it" >&2
else
    echo "doorbell: kept /etc/doorbell/doorbell.toml (the example is in /usr/share/doc/doorbell/examples/)" >&2
fi
$sudo install -D -m 0644 assets/doorbell.example.toml /usr/share/doc/doorbell/examples/doorbell.toml
$sudo install -m 0644 README.md docs/*.md /usr/share/doc/doorbell/

# The user, the groups, the permissions, daemon-reload and (on an upgrade)
# the restart: exactly what the package does.
$sudo debian/postinst configure "$previous"

if [ "$enable" = 1 ]; then
    $sudo systemctl enable --now doorbell.service
    echo "doorbell: enabled and started; logs: journalctl -u doorbell -f" >&2
else
    echo "doorbell: installed $(/usr/bin/doorbell --version). Edit /etc/doorbell/doorbell.toml," \
         "check it with: sudo -u doorbell doorbell check --config /etc/doorbell/doorbell.toml," \
         "then: sudo systemctl enable --now doorbell" >&2
fi

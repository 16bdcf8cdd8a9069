# Sourced by scripts/demo and scripts/test: installs what building (and, with
# --tests, testing) doorbell needs on Debian 12 / Raspberry Pi OS. Debian
# packages first (apt-get update only when something is missing), then the
# Rust toolchain through rustup when cargo is not there.

setup_deps() {
    local packages=(build-essential pkg-config libssl-dev libasound2-dev cmake libclang-dev nasm curl ca-certificates)
    if [ "${1:-}" = "--tests" ]; then
        # chromium: the viewer tests; pulseaudio + the ALSA pulse plugin: the
        # sound card tests (a user-space server with a null sink).
        # systemd: systemd-analyze checks the unit file.
        # openssl: the lab's certificate (tests/lab/make-cert.sh); npm: the
        # socket.io clients of the lab's page (only when no npm is there).
        # coturn: a real TURN server (tests/turn.rs). faketime: a wall clock
        # that steps, iproute2: network namespaces (tests/faults.rs). ffmpeg:
        # ffprobe checks every picture and recording the doorbell writes.
        # redis-server: two `doorbell serve --redis` sharing a fleet
        # (tests/fleet_redis.rs; the test starts its own, on loopback).
        packages+=(chromium python3-venv pulseaudio libasound2-plugins systemd openssl coturn faketime iproute2 ffmpeg redis-server)
        command -v npm >/dev/null 2>&1 || packages+=(npm)
    fi
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        echo "doorbell: installing Debian packages: ${missing[*]}" >&2
        $sudo apt-get update
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
            echo "doorbell: installing the Rust toolchain with rustup" >&2
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        fi
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if [ "${1:-}" = "--tests" ]; then
        # The fuzzers (scripts/fuzz): cargo-fuzz and the nightly toolchain
        # that libFuzzer's instrumentation needs.
        if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
            echo "doorbell: installing the nightly Rust toolchain for the fuzzers" >&2
            rustup toolchain install nightly --profile minimal
        fi
        if ! command -v cargo-fuzz >/dev/null 2>&1; then
            echo "doorbell: installing cargo-fuzz" >&2
            cargo install cargo-fuzz --locked
        fi
    fi
}

#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: promtool, which tests/metrics.rs and
# tests/dashboard.rs use to check the /metrics exposition and the dashboard's PromQL, and
# schemathesis (`st`), which tests/schemathesis.rs runs against docs/openapi.yaml and a live server.
# Idempotent: does nothing for a tool already on PATH (schemathesis: at the pinned version).
# Debian/Ubuntu only (apt-get) for what Python's pip does not provide; run as root or with sudo
# available.
set -euo pipefail

# Wait up to this long for another apt/dpkg run to release its lock instead of failing.
LOCK_TIMEOUT_S=${LOCK_TIMEOUT_S:-600}
# The schemathesis release the suite is checked with; a newer one may add checks.
SCHEMATHESIS_VERSION=4.32.5

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Installs Debian packages, after waiting for anyone else installing packages right now.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "apt-get is not available: install $* by hand" >&2
        exit 1
    fi
    local APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=${LOCK_TIMEOUT_S}")
    # DPkg::Lock::Timeout covers the dpkg lock; the lists lock taken by `apt-get update` is waited
    # for here.
    local waited=0
    while command -v fuser >/dev/null 2>&1 && $SUDO fuser /var/lib/apt/lists/lock >/dev/null 2>&1; do
        if [ "$waited" -ge "$LOCK_TIMEOUT_S" ]; then
            echo "apt lists lock still held after ${LOCK_TIMEOUT_S}s" >&2
            exit 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
    "${APT[@]}" update
    "${APT[@]}" install -y --no-install-recommends "$@"
}

if ! command -v promtool >/dev/null 2>&1; then
    apt_install prometheus
fi
promtool --version

if ! st --version 2>/dev/null | grep -q "version ${SCHEMATHESIS_VERSION}\$"; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    # A virtual environment of its own keeps schemathesis' dependencies apart from the system's
    # Python, which may refuse pip installs (PEP 668).
    if [ "$(id -u)" -eq 0 ]; then
        VENV=${SCHEMATHESIS_VENV:-/opt/gavel-schemathesis}
        BIN=/usr/local/bin
    else
        VENV=${SCHEMATHESIS_VENV:-$HOME/.local/share/gavel-schemathesis}
        BIN=$HOME/.local/bin
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
    mkdir -p "$BIN"
    ln -sf "$VENV/bin/st" "$BIN/st"
    if ! command -v st >/dev/null 2>&1; then
        echo "schemathesis installed as $BIN/st, which is not on PATH: add $BIN to PATH" >&2
        exit 1
    fi
fi
st --version

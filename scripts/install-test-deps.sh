#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo: promtool, which tests/metrics.rs and
# tests/dashboard.rs use to check the /metrics exposition and the dashboard's PromQL.
# Idempotent: does nothing when promtool is already on PATH. Debian/Ubuntu only (apt-get);
# run as root or with sudo available.
set -euo pipefail

# Wait up to this long for another apt/dpkg run to release its lock instead of failing.
LOCK_TIMEOUT_S=${LOCK_TIMEOUT_S:-600}

if ! command -v promtool >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "promtool not found and apt-get is not available: install Prometheus' promtool by hand" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=${LOCK_TIMEOUT_S}")
    # Another process may be installing packages right now.
    # DPkg::Lock::Timeout covers the dpkg lock; the lists lock taken by `apt-get update` is waited
    # for here.
    waited=0
    while command -v fuser >/dev/null 2>&1 && $SUDO fuser /var/lib/apt/lists/lock >/dev/null 2>&1; do
        if [ "$waited" -ge "$LOCK_TIMEOUT_S" ]; then
            echo "apt lists lock still held after ${LOCK_TIMEOUT_S}s" >&2
            exit 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
    # Whoever held the lock may have installed promtool meanwhile.
    if ! command -v promtool >/dev/null 2>&1; then
        "${APT[@]}" update
        "${APT[@]}" install -y --no-install-recommends prometheus
    fi
fi

promtool --version

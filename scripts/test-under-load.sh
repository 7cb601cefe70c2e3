#!/bin/sh
# Runs `make test` while `stress-ng --cpu N` keeps every core busy, as on a developer's machine that is
# doing other work: the suite must hold there too. stress-ng is stopped whatever happens; the script
# reports the elapsed time and exits with make test's status.
#
#   scripts/test-under-load.sh [make test arguments, e.g. ARGS="-k judge"]
#   FM_STRESS_CPUS=2 scripts/test-under-load.sh      # workers to start (default: one per core)
set -u

cd "$(dirname "$0")/.."

if ! command -v stress-ng >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing stress-ng"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -qq --no-install-recommends stress-ng >/dev/null; }
    fi
    if ! command -v stress-ng >/dev/null 2>&1; then
        echo "test-under-load needs stress-ng. Install it with:  sudo apt-get install -y stress-ng" >&2
        exit 2
    fi
fi

cpus=${FM_STRESS_CPUS:-$(nproc)}
stress-ng --cpu "$cpus" --quiet &
stress_pid=$!

stop_stress() {
    if kill -0 "$stress_pid" 2>/dev/null; then
        kill "$stress_pid" 2>/dev/null
        wait "$stress_pid" 2>/dev/null
    fi
}
trap stop_stress EXIT
trap 'stop_stress; exit 130' INT
trap 'stop_stress; exit 143' TERM

echo "stress-ng --cpu $cpus running (pid $stress_pid); make test $*"
started=$(date +%s)
make test "$@"
status=$?
elapsed=$(( $(date +%s) - started ))
stop_stress
echo "make test under stress-ng --cpu $cpus: exit status $status after ${elapsed} s ($((elapsed / 60)) min $((elapsed % 60)) s)"
exit "$status"

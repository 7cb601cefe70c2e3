#!/bin/sh
# Installs the system packages that fridaymorning and its tests need, when we are root.
# When we are not root it says what to install and carries on: tests that need a missing
# component fail with the same advice.
set -eu

# binary -> Debian package. stress-ng keeps the cores busy for scripts/test-under-load.sh; nginx-light is
# a real third-party service for the benchmarks; chromium runs the dashboard's browser tests.
# docker.io (dockerd) and busybox-static (the demo images) for the Swarm platform and its tests.
NEEDED="haproxy:haproxy halog:haproxy wrk:wrk stress-ng:stress-ng nginx:nginx-light chromium:chromium dockerd:docker.io busybox:busybox-static"

missing=""
for pair in $NEEDED; do
    binary=${pair%%:*}
    package=${pair##*:}
    if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ]; then
        case " $missing " in *" $package "*) ;; *) missing="$missing $package" ;; esac
    fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "fridaymorning needs these system packages:$missing" >&2
    echo "install them with:  sudo apt-get install -y$missing" >&2
fi

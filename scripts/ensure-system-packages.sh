#!/bin/sh
# Installs the system packages that fridaymorning and its tests need, when we are root.
# When we are not root it says what to install and carries on: tests that need a missing
# component fail with the same advice.
set -eu

# binary -> Debian package. stress-ng keeps the cores busy for scripts/test-under-load.sh; nginx-light is
# a real third-party service for the benchmarks; chromium runs the dashboard's browser tests; influxd,
# victoria-metrics and prometheus are the monitoring servers the store and provider tests start; dockerd
# runs the Swarm tests, busybox-static builds their images; rsyslog relays logs like a team's syslog
# daemon; rsync and npm serve the GitLab CI test.
NEEDED="haproxy:haproxy halog:haproxy wrk:wrk stress-ng:stress-ng nginx:nginx-light chromium:chromium
influxd:influxdb victoria-metrics:victoria-metrics prometheus:prometheus dockerd:docker.io
busybox:busybox-static rsyslogd:rsyslog rsync:rsync ip:iproute2 nsenter:util-linux openssl:openssl
node:nodejs npm:npm"

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

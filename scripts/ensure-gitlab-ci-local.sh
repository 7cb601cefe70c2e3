#!/bin/sh
# Installs gitlab-ci-local, for the test that runs examples/gitlab/.gitlab-ci.yml, from the committed
# package-lock.json (`npm ci`): its dependencies float, and their newer releases need a newer Node.js.
# When Node.js or npm is missing it says what to install and carries on: the test then fails with the
# same advice.
set -eu

dir="$(dirname "$0")/../tools/gitlab-ci-local"
binary="$dir/node_modules/.bin/gitlab-ci-local"
advice="gitlab-ci-local needs Node.js >= 20.19 with npm (e.g. from NodeSource), then: npm ci --prefix tools/gitlab-ci-local"

# Up to date when installed after the lock file last changed.
if [ -x "$binary" ] && [ "$binary" -nt "$dir/package-lock.json" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "$advice" >&2
    exit 0
fi
# The locked dependencies (yargs 18 among them) need Node.js 20.19 or later; Debian 12's nodejs is 18.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
    echo "Node.js $(node --version) is too old; $advice" >&2
    exit 0
fi
echo "installing gitlab-ci-local from tools/gitlab-ci-local/package-lock.json"
if npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error; then
    touch "$binary"
else
    echo "npm ci failed; $advice" >&2
fi

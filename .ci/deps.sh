#!/usr/bin/env bash
# Debian packages the tests need besides Python: docker-compose (`docker-compose config -q`
# validates compose.yaml; no Docker engine is needed), prometheus (its `promtool` checks
# the Prometheus config and alert rules, and runs their unit tests), curl (the README's
# first-swipe walk-through runs as written) and chromium (tests/browser/ drive the console
# in it through Playwright, which never downloads a browser of its own). Idempotent: nothing
# is fetched when every tool is there already.
set -euo pipefail

need=()
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v promtool >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# Installing prometheus must not leave its server running: a policy-rc.d that answers 101
# tells the package's scripts not to start services (unless the machine has one of its own).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

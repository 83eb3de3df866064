#!/usr/bin/env bash
# Debian packages the tests need on the CI host (fresh machines have none of them).
# Idempotent and quick when everything is already there.
set -euo pipefail
pkgs=(docker.io debootstrap nginx-light wrk openssh-client rsync curl logrotate)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install: ${missing[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps apt from trying to start services (no systemd here); we run daemons ourselves.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

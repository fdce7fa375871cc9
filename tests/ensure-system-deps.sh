#!/usr/bin/env bash
# Make sure the real programs the tests drive are installed: Debian packages, installed when missing and root.
set -euo pipefail
declare -A needed=([redis-server]=redis-server [prometheus]=prometheus [promtool]=prometheus [prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager)
missing=()
for program in "${!needed[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("${needed[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run 'sudo apt-get install ${missing[*]}')" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# The programs `make bench` drives: wrk (load), redis-server, a C compiler (bench/pacer.c) and taskset.
# Missing ones are installed from Debian's packages when running as root.
set -euo pipefail
declare -A needed=([wrk]=wrk [redis-server]=redis-server [cc]=gcc [taskset]=util-linux)
missing=()
for program in "${!needed[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("${needed[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: missing Debian packages: ${missing[*]} (run 'sudo apt-get install ${missing[*]}')" >&2
  exit 1
fi
echo "bench: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

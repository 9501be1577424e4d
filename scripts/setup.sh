#!/usr/bin/env bash
# Set up netmgr on a fresh Debian (12+) machine, as root: system packages with
# apt-get, Python dependencies in ./.venv. Safe to run again.
#   --tests   also what only the test suite needs (Debian's docker.io, for a real dockerd next to netmgr)
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1 ;;
    *) echo "setup.sh: unknown argument $arg (known: --tests)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (netmgr manages namespaces, links and nftables)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# iproute2: ip (tests read kernel state with ip -j); nftables: libnftables + nft;
# iptables: only to add accepts to dockerd's DOCKER-USER chain when it exists;
# util-linux: nsenter/unshare; busybox-static: ping etc. inside containers in the labs;
# etcd-server: the cluster store for overlay networks and the multi-host labs;
# openssl: certificates for the plugin TLS test.
apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python3-dev gcc iproute2 nftables iptables util-linux procps busybox-static etcd-server \
  openssl \
  >/dev/null
# docker.io (with --tests): a real dockerd next to netmgr in tests/privileged/test_docker_real.py (started
# there inside a namespace of the test's own, never as a service); also the Docker columns of labs/bench.
# Nothing in netmgr uses it. Its package scripts would start it as a service in the machine's namespace (and
# change its iptables): a policy-rc.d that refuses service starts (Debian's convention) prevents that.
if [ "$tests" -eq 1 ] && ! command -v dockerd >/dev/null 2>&1; then
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  if [ "$own_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# Node.js and npm for the Node.js IPAM plugin (labs/plugins/node-ipam; its tests skip without node).
# A node that came with its own npm (e.g. NodeSource's) is kept.
if ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
(cd labs/plugins/node-ipam && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Every Python package, for the tests and the quickstart alike, at the version and hash of requirements/lock.txt
# (scripts/lock.sh writes it from pyproject.toml's ranges; scripts/check-latest.sh tries the newest releases).
# The build tools are locked too: the editable install uses them instead of an isolated, unpinned build env.
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/lock.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "setup.sh: ready ($(.venv/bin/python --version), netmgr $(.venv/bin/netmgr --version))"

#!/usr/bin/env bash
# Set up netmgr on a fresh Debian (12+) machine, as root: system packages with
# apt-get, Python dependencies in ./.venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

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
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
echo "setup.sh: ready ($(.venv/bin/python --version), netmgr $(.venv/bin/netmgr --version))"

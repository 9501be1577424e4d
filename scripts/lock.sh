#!/usr/bin/env bash
# Write requirements/lock.txt: every Python package netmgr, its tests and its build need, pinned with hashes,
# resolved from pyproject.toml's ranges (and requirements/build.in). Run it to upgrade deliberately, then run
# the suite (scripts/check-latest.sh shows beforehand whether the newest releases pass).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${TMPDIR:-/tmp}/netmgr-lock-tools
[ -x "$tools/bin/uv" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q uv; }
"$tools/bin/uv" pip compile pyproject.toml requirements/build.in --extra dev --generate-hashes \
  --python-version 3.11 --universal --quiet -o requirements/lock.txt "$@"
echo "lock.sh: requirements/lock.txt written"

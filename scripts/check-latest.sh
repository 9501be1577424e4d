#!/usr/bin/env bash
# The scheduled-style check: the whole suite against the newest releases pyproject.toml allows, in a venv of
# its own (.venv-latest), so that an upgrade of the lock file is a decision, not a surprise in CI.
# Run as root after scripts/setup.sh --tests (system packages). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-latest
python3 -m venv .venv-latest
.venv-latest/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
.venv-latest/bin/pip install -q --disable-pip-version-check --upgrade -e '.[dev]'
echo "check-latest.sh: newest releases:"
norm() { tr 'A-Z_' 'a-z-' | sort; }
.venv-latest/bin/pip freeze --exclude-editable | norm | diff <(grep -oE '^[A-Za-z0-9_.-]+==[^ ;]+' requirements/lock.txt | norm) - \
  | sed -n 's/^> /  newer than the lock: /p' || true
VENV=.venv-latest exec ./scripts/test.sh "$@"

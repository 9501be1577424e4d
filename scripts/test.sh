#!/usr/bin/env bash
# Run the whole test suite (as root: the privileged tests use the real kernel).
# Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
"$VENV"/bin/python scripts/gen_proto.py --check || exit 1

"$VENV"/bin/python -m pytest -q -p no:cacheprovider tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: no tests were collected" >&2
  exit 1
fi
exit "$rc"

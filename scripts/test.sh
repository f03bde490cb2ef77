#!/usr/bin/env bash
# Install what the tests need into .venv, then run ruff, mypy and the whole pytest suite.
# Extra arguments go to pytest. PostgreSQL tests run when AGENTD_TEST_POSTGRES_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy (strict, src/agentd)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"

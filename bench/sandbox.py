"""Sandbox backends: what starting a sandboxed command costs, and a command in a
persistent shell.

    .venv/bin/python bench/sandbox.py                 # n = 200
    .venv/bin/python bench/sandbox.py --n 1000 --only bubblewrap

For each backend usable here (``agentd.sandbox.backends.detect()``):

start_ms
    ``Backend.run(["true"])`` N times, one after another, in a fresh workspace: from the
    call to the result, everything included (sandbox set-up, fork and exec, reaping,
    tear-down). p50 / p99 / max in milliseconds.
shell_ms
    One persistent shell (``Backend.shell``), then ``echo hi`` N times through
    ``PersistentShell.run``: from the call to the result. p50 / p99 / max.
net_start_ms
    As ``start_ms`` with a network grant (the cost of the egress control on tool
    start-up): under root the daemon makes the sandbox's network namespace with the
    proxy listening in it; ``net_start_forwarder_ms``: the forwarder way (a
    ``python3`` in the sandbox relaying to the proxy's unix socket), what a daemon
    that is not root does. Not for gVisor (it refuses a grant).
proxied_ms
    In a persistent shell with a grant, ``curl`` of a small page from a local HTTP
    server listed in the operator's endpoints, through the forwarder and the proxy
    (its check included): min(N, 100) requests, each a shell call. ``direct_ms``:
    the same curl run by the daemon's host, unsandboxed, for comparison.

Each backend runs as an agent would: under a root daemon as an agent's own uid
(``[sandbox] uid_base``), in a cgroup of its own capping memory and processes where
one can be made (``cgroup`` says whether). ``bubblewrap-in-turn`` runs bubblewrap as
before per-agent uids (uid ``nobody``, no cgroup: ``baseline_start_ms``) and
the agent's bubblewrap one after the other, N times each, so that the difference (the
cost of the uid and the cgroup) does not drift with the machine's load.

gVisor, when its only fault is an old ``runsc`` that cannot run ``ls`` (its probe says
so), is measured anyway with at most ``--n-gvisor`` runs and reported with
``usable: false`` and the reason. Targets (bubblewrap): start p50 < 20 ms with the
per-agent uid and cgroup, p99 < 40 ms; persistent shell p50 < 2 ms; a network-granted
start p50 < 20 ms wanted (with a forwarder, its python start-up dominates it).

Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _load import info, percentile
from agentd.config import SandboxConfig
from agentd.sandbox import cgroups as _cgroups
from agentd.sandbox.backends import (
    BACKENDS,
    Backend,
    BubblewrapBackend,
    GVisorBackend,
    Limits,
    choose,
    detect,
    prepare_workspace,
)
from agentd.sandbox.egress import EgressProxies, EgressProxy, EgressRules


class _GVisorDespiteOldStatx(GVisorBackend):
    @classmethod
    def _probe(cls) -> str | None:
        return None


def _stats(samples: list[float]) -> dict[str, float | None]:
    ordered = sorted(samples)

    def at(q: float) -> float | None:
        value = percentile(ordered, q)
        return None if value is None else round(value, 3)

    return {"p50": at(50), "p99": at(99), "max": round(ordered[-1], 3) if ordered else None}


async def measure(backend: Backend, n: int, workspace: Path) -> dict[str, Any]:
    limits = Limits(wall_s=30.0)
    for _ in range(min(5, n)):  # warm-up: probes, page cache, first fork
        await backend.run(["true"], workspace=workspace, limits=limits)
    starts = []
    for _ in range(n):
        t = time.perf_counter()
        result = await backend.run(["true"], workspace=workspace, limits=limits)
        starts.append((time.perf_counter() - t) * 1000)
        if result.exit_code != 0:
            raise SystemExit(f"{backend.name}: true failed: {result}")
    info(f"{backend.name}: start {_stats(starts)}")
    shell = await backend.shell(workspace=workspace, limits=limits)
    calls = []
    try:
        for _ in range(min(20, n)):
            await shell.run("echo hi")
        for _ in range(n):
            t = time.perf_counter()
            result = await shell.run("echo hi")
            calls.append((time.perf_counter() - t) * 1000)
            if result.stdout != "hi\n":
                raise SystemExit(f"{backend.name}: echo hi gave {result}")
    finally:
        await shell.close()
    info(f"{backend.name}: shell {_stats(calls)}")
    figures: dict[str, Any] = {"n": n, "start_ms": _stats(starts),
                               "shell_ms": _stats(calls)}
    if backend.name != "gvisor":
        figures.update(await measure_network(backend, n, workspace, limits))
    return figures


async def measure_network(backend: Backend, n: int, workspace: Path, limits: Limits
                          ) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = Path(tempfile.mkdtemp(prefix="agentd-bench-page-"))
    (page / "p.txt").write_text("x" * 1000)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), cwd=page,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    rules = EgressRules.of([f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}/p.txt"
    figures: dict[str, Any] = {}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        for inlets, key in ((True, "net_start_ms"), (False, "net_start_forwarder_ms")):
            egress = EgressProxies(rules, inlets=inlets)
            try:
                proxy = await egress.get(True)
                figures[key] = await _starts(backend, n, workspace, limits, proxy)
                info(f"{backend.name}: {key} {figures[key]}")
                if inlets:
                    figures["proxied_ms"] = await _requests(backend, min(n, 100),
                                                            workspace, limits, proxy, url)
            finally:
                await egress.close()
        direct = []
        for i in range(min(n, 100) + 5):
            t = time.perf_counter()
            done = await asyncio.create_subprocess_exec(
                "curl", "-sf", "-o", "/dev/null", "--noproxy", "*", url)
            await done.wait()
            if i >= 5:
                direct.append((time.perf_counter() - t) * 1000)
        figures["direct_ms"] = _stats(direct)
        info(f"{backend.name}: proxied {figures['proxied_ms']} direct {_stats(direct)}")
        return figures
    finally:
        server.kill()
        await server.wait()
        shutil.rmtree(page, ignore_errors=True)


async def _starts(backend: Backend, n: int, workspace: Path, limits: Limits,
                  proxy: EgressProxy) -> dict[str, float | None]:
    for _ in range(min(5, n)):
        await backend.run(["true"], workspace=workspace, network=proxy, limits=limits)
    starts = []
    for _ in range(n):
        t = time.perf_counter()
        result = await backend.run(["true"], workspace=workspace, network=proxy,
                                   limits=limits)
        starts.append((time.perf_counter() - t) * 1000)
        if result.exit_code != 0:
            raise SystemExit(f"{backend.name}: networked true failed: {result}")
    return _stats(starts)


async def _requests(backend: Backend, m: int, workspace: Path, limits: Limits,
                    proxy: EgressProxy, url: str) -> dict[str, float | None]:
    shell = await backend.shell(workspace=workspace, network=proxy, limits=limits)
    proxied = []
    try:
        for i in range(m + 5):
            t = time.perf_counter()
            result = await shell.run(f"curl -sf -o /dev/null {url}")
            if i >= 5:
                proxied.append((time.perf_counter() - t) * 1000)
            if result.exit_code != 0:
                raise SystemExit(f"{backend.name}: proxied curl failed: {result}")
    finally:
        await shell.close()
    return _stats(proxied)


async def baseline(agent: Backend, n: int, tmp: Path, workspace: Path
                   ) -> dict[str, Any]:
    """Bubblewrap as before per-agent uids (``nobody``, no cgroup) against ``agent``
    (its uid and cgroup), run after run in turn, so that the load of the machine
    weighs on both alike."""
    old_ws = tmp / "baseline"
    old_ws.mkdir(mode=0o700)
    prepare_workspace(old_ws)
    pid = os.getpid()
    kept = _cgroups.support()
    off = _cgroups.Support(reason="off for the baseline")
    limits = Limits(wall_s=30.0)
    old: list[float] = []
    new: list[float] = []
    try:
        for _ in range(n):
            for backend, where, cgroups, samples in (
                    (agent, workspace, kept, new),
                    (BubblewrapBackend(), old_ws, off, old)):
                _cgroups._cache[pid] = cgroups
                t = time.perf_counter()
                await backend.run(["true"], workspace=where, limits=limits)
                samples.append((time.perf_counter() - t) * 1000)
    finally:
        _cgroups._cache[pid] = kept
    info(f"bubblewrap in turn: uid+cgroup {_stats(new)}, baseline {_stats(old)}")
    return {"n": n, "start_ms": _stats(new), "baseline_start_ms": _stats(old)}


async def amain(args: argparse.Namespace) -> None:
    reasons = detect()
    info(f"detected: {reasons}")
    cgroups = _cgroups.support()
    uid = SandboxConfig().uid_base
    user = (uid, uid) if os.geteuid() == 0 else None
    out: dict[str, Any] = {"bench": "sandbox", "uid": uid if user else os.geteuid(),
                           "cgroup": f"v{cgroups.version}" if cgroups.usable
                           else cgroups.reason, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="agentd-bench-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir(mode=0o700)
        prepare_workspace(workspace, user=user)
        # Usable backends first: a gVisor sandbox's threads run as the sandbox uid
        # and, while they wind down, count against the others' process limit.
        for cls in sorted(BACKENDS, key=lambda c: (reasons[c.name] is not None,
                                                   -c.strength)):
            if args.only and cls.name not in args.only:
                continue
            reason = reasons[cls.name]
            backend: Backend
            n = args.n
            if reason is None:
                backend = choose(cls.name)
            elif cls is GVisorBackend and "AT_NO_AUTOMOUNT" in reason:
                backend, n = _GVisorDespiteOldStatx(), min(args.n, args.n_gvisor)
            else:
                out["backends"][cls.name] = {"usable": False, "reason": reason}
                continue
            figures = await measure(backend.as_user(user), n, workspace)
            out["backends"][cls.name] = {"usable": reason is None, **figures,
                                         **({"reason": reason} if reason else {})}
            if cls is BubblewrapBackend and reason is None:
                out["backends"]["bubblewrap-in-turn"] = await baseline(
                    backend.as_user(user), n, Path(tmp), workspace)
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "kernel": platform.release(), "root": os.geteuid() == 0}
    print(orjson.dumps(out).decode(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="runs and shell calls each")
    parser.add_argument("--n-gvisor", type=int, default=30,
                        help="at most this many for a gVisor that is not usable")
    parser.add_argument("--only", type=lambda s: s.split(","), default=None,
                        help="comma-separated backend names")
    asyncio.run(amain(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

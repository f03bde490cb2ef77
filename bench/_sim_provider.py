"""A simulated rate-limited provider for bench/scheduler.py, in a process of its own.

The child process runs :class:`agentd.testing.StubLLMServer` with a capacity model
(OpenAI Chat Completions wire, echo answers) so that the server's event loop does not
share the GIL with the runtime or the SDK under test. The parent talks to it over the
child's stdin / stdout, one JSON line each way:

- on start the child prints ``{"base_url": ...}``;
- ``{"cmd": "capacity", "capacity": {...}}`` sets a new capacity model (its buckets
  start full), zeroes the counts and forgets the recorded requests;
- ``{"cmd": "stats"}`` answers with the admission counts since then and the tokens
  of the requests received, as the capacity model counts them;
- ``{"cmd": "quit"}`` (or stdin closing) stops it.

    proc = SimProvider({"concurrency": 8, "latency_s": 0.2, "rpm": 2400})
    proc.base_url; proc.stats(); proc.configure({...}); proc.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SimProvider", "wire_tokens"]


def wire_tokens(body: dict[str, Any]) -> int:
    """A request's tokens as the stub's capacity model counts them at admission: the
    characters of its JSON-encoded ``messages`` / 4, rounded up, plus ``max_tokens``
    (``max_completion_tokens``). Kept in step with ``agentd.testing._capacity.estimate_tokens``."""
    chars = len(orjson.dumps(body.get("messages", [])))
    out = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(out, bool) or not isinstance(out, int):
        out = 0
    return -(-chars // 4) + max(0, out)


class SimProvider:
    """The parent's handle on the child process."""

    def __init__(self, capacity: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), orjson.dumps(capacity).decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        hello = self._read()
        self.base_url: str = hello["base_url"]
        self.pid = self.proc.pid

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulated provider exited ({self.proc.poll()})")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(message) + b"\n")
        self.proc.stdin.flush()
        return self._read()

    def configure(self, capacity: dict[str, Any]) -> None:
        self._ask({"cmd": "capacity", "capacity": capacity})

    def stats(self) -> dict[str, Any]:
        return self._ask({"cmd": "stats"})

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._ask({"cmd": "quit"})
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _child(raw_capacity: str) -> None:
    from agentd.testing.stub_llm import Capacity, StubLLMServer

    def capacity(raw: dict[str, Any]) -> Capacity:
        return Capacity(**raw)

    stub = StubLLMServer(capacity=capacity(orjson.loads(raw_capacity)))
    stub.start()
    seen = 0  # requests already summed into the counts below

    def emit(message: dict[str, Any]) -> None:
        sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
        sys.stdout.buffer.flush()

    emit({"base_url": stub.base_url})
    tokens_total = 0
    requests = 0
    try:
        for line in sys.stdin.buffer:
            command = orjson.loads(line)
            cmd = command.get("cmd")
            if cmd == "capacity":
                stub.capacity = capacity(command["capacity"])
                stub.reset_stats()
                stub.clear()
                seen = tokens_total = requests = 0
                emit({"ok": True})
            elif cmd == "stats":
                bodies = stub.requests
                for body in bodies[seen:]:
                    tokens_total += wire_tokens(body)
                requests += len(bodies) - seen
                seen = len(bodies)
                stats = dataclasses.asdict(stub.stats)
                emit({**stats, "requests": requests, "request_tokens": tokens_total})
            elif cmd == "quit":
                emit({"ok": True})
                break
            else:
                emit({"error": f"unknown command {cmd!r}"})
    finally:
        stub.close()


if __name__ == "__main__":
    _child(sys.argv[1])

"""The export worker: traces are built and sent by a process of the daemon's own, so
the serving process never imports the OpenTelemetry SDK; a worker that is killed is
started again and no run's trace is lost; it reads PostgreSQL as well as SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import ThreadDaemon, clean_env, create_agent
from tests.telemetry._receiver import HttpReceiver, Span

from agentd.config import TelemetryConfig

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    got = HttpReceiver()
    yield got
    got.close()


def _roots(spans: list[Span]) -> list[str]:
    return sorted(str(s.attributes["agentd.run.id"]) for s in spans
                  if s.name == "invoke_agent helper")


def _send(client: httpx.Client) -> str:
    reply = client.post("/v1/agents/helper/sessions/main/messages",
                        json={"content": "go", "wait": True})
    assert reply.status_code == 200, reply.text
    run: dict[str, Any] = reply.json()
    assert run["status"] == "completed", run
    return str(run["id"])


def _daemon(tmp_path: Path, receiver: HttpReceiver, **settings: Any) -> ThreadDaemon:
    return ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token="t" * 40,
                        telemetry=TelemetryConfig(traces_exporter="otlp",
                                                  otlp_endpoint=receiver.url),
                        **settings).start()


def test_a_killed_worker_is_started_again_and_no_trace_is_lost(
        tmp_path: Path, receiver: HttpReceiver) -> None:
    daemon = _daemon(tmp_path, receiver)
    try:
        with daemon.client() as client:
            create_agent(client, "helper", model="scripted",
                         settings={"script": [{"text": "done"}]})
            first = _send(client)
            receiver.receiver.wait_for(lambda got: _roots(got) == [first])
            health = client.get("/health").json()["traces"]
            pid = health["worker_pid"]
            assert isinstance(pid, int) and pid != os.getpid() and health["worker_starts"] == 1
            os.kill(pid, signal.SIGKILL)
            runs = [first, _send(client), _send(client)]
            # At least once: a worker killed between the receiver's answer and its own
            # sends that batch again, with the same ids (a receiver keeps one of each).
            spans = receiver.receiver.wait_for(lambda got: set(_roots(got)) == set(runs))
            assert len({(s.trace_id, s.span_id) for s in spans
                        if s.name == "invoke_agent helper"}) == 3
            health = wait_until(
                lambda: (h := client.get("/health").json()["traces"])["exported_runs"] >= 3
                and h, what="the three runs recorded as exported")
            assert health["worker_starts"] >= 2 and health["worker_pid"] != pid
    finally:
        daemon.cleanup()


def test_the_worker_reads_postgresql(tmp_path: Path, receiver: HttpReceiver,
                                     pg_url: str) -> None:
    daemon = _daemon(tmp_path, receiver, database_url=pg_url)
    try:
        with daemon.client() as client:
            create_agent(client, "helper", model="scripted",
                         settings={"script": [{"text": "done"}]})
            runs = [_send(client), _send(client)]
            spans = receiver.receiver.wait_for(lambda got: _roots(got) == sorted(runs))
            chat = next(s for s in spans if s.name.startswith("chat "))
            assert chat.attributes["gen_ai.provider.name"] == "scripted"
            wait_until(lambda: client.get("/health").json()["traces"]["exported_runs"] >= 2,
                       what="both runs recorded as exported")
    finally:
        daemon.cleanup()


def test_with_traces_on_the_serving_process_imports_nothing_of_the_sdk(
        tmp_path: Path, receiver: HttpReceiver) -> None:
    script = """
import sys, time, httpx
from agentd.config import Settings, TelemetryConfig
from agentd.testing.live import LiveServer
settings = Settings(home=sys.argv[1], token="t" * 40, telemetry=TelemetryConfig(
    traces_exporter="otlp", otlp_endpoint=sys.argv[2]))
with LiveServer(settings) as server:
    h = {"Authorization": "Bearer " + "t" * 40}
    r = httpx.post(server.url + "/v1/agents/demo/sessions/k/messages",
                   json={"content": "hi", "wait": True}, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    for _ in range(600):  # (until exported: the worker took the run)
        if httpx.get(server.url + "/health").json()["traces"]["exported_runs"]:
            break
        time.sleep(0.1)
    print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk",
          "opentelemetry.exporter", "opentelemetry.proto", "google.protobuf", "grpc"))))
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "home"),
                             receiver.url], env=clean_env(), capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert receiver.receiver.spans, "the run's spans were not received"
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == []

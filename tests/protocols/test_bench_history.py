"""bench/history.py's adapter and door paths in small: every mode of each runs against
the real daemon with no error and every answer checked (figures are not judged here:
timing belongs to the bench)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.daemons import run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_history_bench_runs_clean_on_the_adapter_and_door_paths(tmp_path: Path
                                                                     ) -> None:
    figures, result = run_bench(BENCH / "history.py", [
        "--paths", "adapter,langgraph,openai", "--lengths", "2,5", "--turns", "2"], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert figures["paths_errors"] == []
    sys.path.insert(0, str(BENCH))
    try:
        from _history_paths import MODES
    finally:
        sys.path.remove(str(BENCH))
    for path, modes in MODES.items():
        assert set(figures["paths"][path]) == set(modes), path
        for mode in modes:
            assert set(figures["paths"][path][mode]) == {"2", "5"}, (path, mode)
            assert all(v is not None and v >= 0
                       for v in figures["paths"][path][mode].values()), (path, mode)


@pytest.mark.parametrize("peer", ["lean", "stub"])
def test_the_history_bench_runs_clean_on_the_provider_path(tmp_path: Path, peer: str
                                                           ) -> None:
    """Both providers through their SDKs to each model server (the bench's lean peer,
    the tests' stub), every answer checked to be its echo: a figure per length and
    mode, the kernel's part of it and the request's size (the body grows with the
    history)."""
    figures, result = run_bench(BENCH / "history.py", [
        "--lengths", "2,20", "--turns", "2", "--peer", peer], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert figures["peer"] == peer
    for provider in ("openai", "anthropic"):
        for mode in ("wait", "stream"):
            assert set(figures["cpu_ms_per_turn"][provider][mode]) == {"2", "20"}
            detail = figures["detail"][provider][mode]
            assert detail["20_request_kb"] > detail["2_request_kb"] > 0, detail
            assert detail["2_sys_ms"] >= 0 and detail["20_sys_ms"] >= 0


def test_the_lean_peer_echoes_the_last_user_message_and_refuses_the_rest(
        tmp_path: Path) -> None:
    """bench/_lean_peer.py, the history bench's model server, started as the bench
    starts it (``LeanPeer``), over a real socket: the echo of the last user message
    (not ASCII, after earlier ones that are) in each wire, and a 4xx for what it does
    not serve."""
    import httpx
    import orjson

    sys.path.insert(0, str(BENCH))
    try:
        from history import LeanPeer
    finally:
        sys.path.remove(str(BENCH))
    with LeanPeer(tmp_path) as peer:
        url = peer.root_url
        said = "Grüße, 世界 \"quoted\""
        openai = orjson.dumps({"messages": [
            {"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": said}], "model": "m", "stream": True})
        reply = httpx.post(f"{url}/v1/chat/completions", content=openai, timeout=30)
        assert reply.status_code == 200
        frames = [orjson.loads(line[6:]) for line in reply.text.splitlines()
                  if line.startswith("data: {")]
        text = "".join(f["choices"][0]["delta"].get("content") or ""
                       for f in frames if f["choices"])
        assert text == f"stub: {said}"
        assert frames[-1]["usage"]["prompt_tokens"] > 0
        anthropic = b'{"model":"c","max_tokens":5,"stream":true,"messages":[' + orjson.dumps(
            {"role": "user", "content": [{"type": "text", "text": said}]}) + b"]}"
        reply = httpx.post(f"{url}/v1/messages", content=anthropic, timeout=30)
        assert reply.status_code == 200
        deltas = [orjson.loads(line[6:]) for line in reply.text.splitlines()
                  if line.startswith("data: ") and "text_delta" in line]
        assert "".join(d["delta"]["text"] for d in deltas) == f"stub: {said}"
        not_streamed = openai.replace(b'"stream":true', b'"stream":false')
        assert httpx.post(f"{url}/v1/chat/completions", content=not_streamed,
                          timeout=30).status_code == 400
        assert httpx.post(f"{url}/v1/chat/completions", content=b"not json",
                          timeout=30).status_code == 400
        assert httpx.post(f"{url}/v1/chat/completions", content=b'{"role":"user"\xff',
                          timeout=30).status_code == 400
        assert httpx.post(f"{url}/v1/embeddings", content=b"{}", timeout=30).status_code == 404
        stats = httpx.get(f"{url}/stats", timeout=30).json()
        assert stats == {"calls": 2, "last_request_bytes": len(anthropic)}

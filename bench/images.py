"""What images cost: checking one (Pillow, in this process), and a turn of a session
whose history holds images (the daemon's CPU), against the number of images in it.

    PYTHONPATH=src:bench .venv/bin/python bench/images.py
    PYTHONPATH=src:bench .venv/bin/python bench/images.py --images 0,10,40 --turns 30

1. ``check_ms``: :func:`agentd.media.check` of a PNG and a JPEG of random pixels at a
   few sizes (best of five), what a message's image costs before it is accepted.
2. ``cpu_ms_per_turn[provider][n]``: a real daemon (``python -m agentd serve``, SQLite,
   fresh AGENTD_HOME) and :class:`agentd.testing.StubLLMServer` over the real wire
   formats through the official SDKs (``openai:gpt-4.1-mini``, Chat Completions;
   ``anthropic:claude-sonnet-4-5``, Messages). For each n, a session gets n messages
   each carrying a different 256x256 JPEG (about 50 KB), then ``--turns`` text turns
   are measured (each waited for): the daemon's CPU (``/proc``) over them, divided by
   them. Each image is encoded once per session's history (the provider memo), so a
   turn's CPU should not grow with n beyond the request's size on the wire (n images'
   base64 sent on every call: that is the providers' API, not agentd's work).

Prints one JSON line: ``check_ms``, ``cpu_ms_per_turn``, ``ratio`` (largest over
smallest per provider), ``request_kb`` (the last request's body per provider and n).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _load import LocalDaemon, info
from agentd.media import MediaLimits, check
from agentd.testing import StubLLMServer

TOKEN = "images-bench-" + secrets.token_hex(8)
MODELS = {"openai": "openai:gpt-4.1-mini", "anthropic": "anthropic:claude-sonnet-4-5"}


def noise(width: int, height: int, fmt: str, seed: int = 0) -> bytes:
    from PIL import Image

    rng = __import__("random").Random(seed)
    raw = bytes(rng.getrandbits(8) for _ in range(width * height * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), raw).save(out, fmt)
    return out.getvalue()


def check_ms() -> dict[str, float]:
    limits = MediaLimits(max_part_bytes=64 << 20)
    out: dict[str, float] = {}
    for fmt, media_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        for side in (256, 1024, 2048):
            data = noise(side, side, fmt, seed=side)
            best = min(_timed(lambda d=data, m=media_type: check(d, m, limits))
                       for _ in range(5))
            name = f"{fmt.lower()}_{side}"
            out[name] = round(best * 1000, 2)
            info(f"check {fmt} {side}x{side} ({len(data) >> 10} KB): {out[name]} ms")
    return out


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(daemon: LocalDaemon, api: httpx.Client, stub: StubLLMServer, provider: str,
            images: int, turns: int) -> tuple[float, float]:
    agent, key = f"i-{provider}", f"s-{images}-{secrets.token_hex(4)}"
    path = f"/v1/agents/{agent}/sessions/{key}/messages"
    for i in range(images):
        data = base64.b64encode(noise(256, 256, "JPEG", seed=1000 * images + i)).decode()
        sent = api.post(path, json={"content": [{"type": "text", "text": f"image {i}"},
                                                {"type": "image", "data": data}]})
        if sent.status_code != 200 or sent.json()["status"] != "completed":
            raise RuntimeError(f"seeding: {sent.text[:300]}")
    api.post(path, json={"content": "warm up"}).raise_for_status()
    before = daemon.server.cpu_s()
    for i in range(turns):
        run = api.post(path, json={"content": f"turn {i}"}).json()
        if run.get("output") != f"stub: turn {i}":
            raise RuntimeError(f"unexpected answer {str(run)[:300]}")
    after = daemon.server.cpu_s()
    assert before is not None and after is not None
    size = len(orjson.dumps(stub.requests[-1])) / 1024
    return round((after - before) * 1000 / turns, 3), round(size, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="0,10,40")
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--providers", default="openai,anthropic")
    args = parser.parse_args()
    counts = [int(x) for x in args.images.split(",")]
    providers = args.providers.split(",")
    checks = check_ms()
    figures: dict[str, dict[str, float]] = {}
    sizes: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="agentd-images-") as tmp, \
            StubLLMServer(prompt_cache=False) as stub:
        env = {"OPENAI_API_KEY": "sk-stub", "ANTHROPIC_API_KEY": "stub-key"}
        with LocalDaemon(Path(tmp), TOKEN, env) as daemon, httpx.Client(
                base_url=daemon.base, headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120) as api:
            for provider in providers:
                base = stub.base_url if provider == "openai" else stub.root_url
                api.post("/v1/agents", json={
                    "name": f"i-{provider}", "model": MODELS[provider],
                    "settings": {"base_url": base, "memory": {
                        "compaction": {"auto": False}, "auto_recall": False}},
                }).raise_for_status()
                for n in counts:
                    cpu, kb = measure(daemon, api, stub, provider, n, args.turns)
                    figures.setdefault(provider, {})[str(n)] = cpu
                    sizes.setdefault(provider, {})[str(n)] = kb
                    info(f"{provider}, {n} images in the history: {cpu} ms CPU per turn, "
                         f"request {kb} KB")
    ratio = {p: round(max(v.values()) / min(v.values()), 2) for p, v in figures.items()}
    print(orjson.dumps({"bench": "images", "python": sys.version.split()[0],
                        "cpus": os.cpu_count(), "turns": args.turns, "check_ms": checks,
                        "cpu_ms_per_turn": figures, "ratio": ratio,
                        "request_kb": sizes}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

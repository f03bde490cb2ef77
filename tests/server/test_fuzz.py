"""The daemon's OpenAPI schema, fuzzed with schemathesis against the real app (ASGI, its
own runtime on SQLite, the demo agent on so that sessions and runs exist), with auth:
no server error, no undocumented status or content type, every response (JSON or SSE
event) inside its schema, Allow headers right, auth not ignored, invalid data refused.

A bounded run (a few examples per operation); bench/fuzz.py runs the long one against
a live daemon with the same settings (bench/schemathesis.toml).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.python.asgi import get_client, shutdown_lifespans  # noqa: E402

from agentd.config import Settings  # noqa: E402
from agentd.security.tokens import read_token  # noqa: E402
from agentd.server.app import create_app  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "bench" / "schemathesis.toml"
# The serializer of JSON-lines bodies, as bench/fuzz.py loads it (SCHEMATHESIS_HOOKS).
_hooks = importlib.util.spec_from_file_location("schemathesis_hooks",
                                                CONFIG.parent / "schemathesis_hooks.py")
assert _hooks is not None and _hooks.loader is not None
_hooks.loader.exec_module(importlib.util.module_from_spec(_hooks))
EXAMPLES = 6  # per operation and mode: about 400 requests in all
#: The operations are fuzzed in this many tests (each every SHARDS-th operation), so that
#: workers share the minute it takes.
SHARDS = 4


def fuzz(operation: Any, mode: GenerationMode, pinned: dict[str, str] | None = None,
         timeout: float = 10) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        case.call_and_validate(timeout=timeout)  # the token comes from the config

    check()


@pytest.mark.parametrize("shard", range(SHARDS))
def test_the_api_holds_to_its_schema(shard: int, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    app = create_app(Settings(home=home, demo_agent=True, shutdown_grace_s=2.0,
                              database_url=f"sqlite:///{tmp_path / 'agentd.db'}"))
    token = read_token(home)
    assert token
    monkeypatch.setenv("AGENTD_FUZZ_TOKEN", token)
    auth = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    try:
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", app, headers=auth, config=SchemathesisConfig.from_path(CONFIG))
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 30  # the whole API, not a corner of it
        # Random names and keys mostly meet 404s: also aim at the demo agent's session
        # "s" (with a run in its log), so the routes' real work is fuzzed too.
        with get_client(app) as client:
            sent = client.post("/v1/agents/demo/sessions/s/messages", headers=auth,
                               json={"content": "hello"})
            assert sent.status_code == 200, sent.text
        for operation in operations[shard::SHARDS]:
            names = {p.name for p in operation.path_parameters}
            pinned = {k: v for k, v in (("name", "demo"), ("key", "s")) if k in names}
            variants: list[tuple[GenerationMode, dict[str, str] | None]] = [
                (GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
            if pinned:
                variants.append((GenerationMode.POSITIVE, pinned))
            for mode, pin in variants:
                try:
                    fuzz(operation, mode, pin, timeout=(
                        # The live feed never ends: what it sent in that time is checked.
                        2 if operation.label == "GET /v1/events" else 10))
                except Unsatisfiable:  # nothing to get wrong (GET /health, say)
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except Exception as exc:  # every operation is fuzzed; all are reported
                    failures.append(f"{operation.label} ({mode}, {pin}): {exc}")
    finally:
        shutdown_lifespans()  # the app's lifespan closes its runtime
    assert not failures, "\n\n".join(failures)

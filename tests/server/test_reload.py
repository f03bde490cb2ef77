"""``POST /v1/admin/reload``: agentd.toml read again while the daemon runs (SQLite and
PostgreSQL). What is live applies at once and shows through the API (a lane's limit,
a token, a tenant's quota, the policy of the next run, a named endpoint of an awake
agent); what needs a restart is reported and left as it runs; a file that cannot be
loaded changes nothing and says which field and why; only an admin whose scope is
every agent may reload. The real process and SIGHUP: tests/e2e/test_reload_e2e.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from tests.conftest import WORKER_UID_BASE

from agentd.assembly import Runtime
from agentd.assembly.reload import FIELDS, ConfigInvalid, Reloader, changed_paths, field_of
from agentd.config import Settings, load_settings
from agentd.server.app import create_app
from agentd.telemetry.logs import JsonFormatter, Redactor, TextFormatter
from agentd.testing import StubLLMServer

ADMIN = "reload-admin-0123456789abcdefghijklmn"
OPERATOR = "reload-oper-0123456789abcdefghijklmno"
ACME_ADMIN = "reload-acme-0123456789abcdefghijklmno"
LATER = "reload-later-0123456789abcdefghijklmn"

#: An admin (token-1), an operator (token-2), an admin scoped to tenant acme (token-3).
BASE = f"""
tokens = ["{ADMIN}", "{OPERATOR}", "{ACME_ADMIN}"]

[access.token-2]
role = "operator"

[access.token-3]
role = "admin"
tenants = ["acme"]

[tenants.acme.quotas]
agents = 1

[providers.openai]
concurrency = 2
"""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Daemon:
    runtime: Runtime
    api: httpx.AsyncClient
    file: Path

    async def call(self, method: str, path: str, token: str | None = ADMIN,
                   **kwargs: Any) -> httpx.Response:
        return await self.api.request(method, path, headers=auth(token) if token else {},
                                      **kwargs)

    def write(self, text: str) -> None:
        self.file.write_text(text)

    async def reload(self, token: str | None = ADMIN) -> httpx.Response:
        return await self.call("POST", "/v1/admin/reload", token)

    async def concurrency(self) -> int | None:
        kernel = await self.call("GET", "/v1/kernel")
        assert kernel.status_code == 200, kernel.text
        limit: int | None = kernel.json()["scheduler"]["lanes"]["openai"]["limits"][
            "concurrency"]
        return limit


@asynccontextmanager
async def daemon(tmp_path: Path, store_url: str, toml: str = BASE, **start: Any
                 ) -> AsyncIterator[Daemon]:
    """A runtime and its app, their settings read from ``$AGENTD_HOME/agentd.toml`` as
    a daemon reads them (``start``: what the command line gives, again on a reload)."""
    home = tmp_path / "home"  # (AGENTD_HOME: tests/conftest.py)
    home.mkdir(exist_ok=True)
    (home / "agentd.toml").write_text(toml)
    load = partial(load_settings, database_url=store_url, demo_agent=False,
                   shutdown_grace_s=2.0, sandbox={"uid_base": WORKER_UID_BASE,
                                                  "uid_count": 20_000}, **start)
    settings = load()
    runtime = await Runtime.open(settings, reload_from=load)
    try:
        app = create_app(settings, runtime)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
            yield Daemon(runtime, api, home / "agentd.toml")
    finally:
        await runtime.close()


# -- the table ---------------------------------------------------------------------------


def test_every_setting_is_classified_live_or_restart() -> None:
    """A setting added to config.Settings must say what a reload does with it."""
    expected: set[str] = set()
    for name, info in Settings.model_fields.items():
        if name in FIELDS:
            expected.add(name)
            continue
        section = info.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel), (
            f"Settings.{name} is not classified in agentd.assembly.reload.FIELDS")
        keys = {f"{name}.{sub}" for sub in section.model_fields}
        missing = sorted(keys - set(FIELDS))
        assert not missing, f"not classified in agentd.assembly.reload.FIELDS: {missing}"
        expected |= keys
    assert set(FIELDS) == expected, sorted(set(FIELDS) ^ expected)
    assert set(FIELDS.values()) == {"live", "restart"}


def test_changed_settings_are_named_to_the_deepest_key() -> None:
    old = Settings(_env_file=None, providers={"openai": {"concurrency": 2}},
                   tenants={"acme": {}})
    new = Settings(_env_file=None, providers={"openai": {"concurrency": 3}},
                   tenants={"beta": {"weight": 2.0}}, port=1,
                   telemetry={"log_format": "json", "metrics": False})
    paths = changed_paths(old, new)
    assert {p: FIELDS[field_of(p)] for p in paths} == {
        "port": "restart", "providers.openai.concurrency": "live", "tenants.acme": "live",
        "tenants.beta": "live", "telemetry.log_format": "live",
        "telemetry.metrics": "restart"}


# -- who may --------------------------------------------------------------------------


async def test_only_an_admin_over_every_agent_may_reload(tmp_path: Path, store_url: str
                                                         ) -> None:
    async with daemon(tmp_path, store_url) as d:
        made = await d.call("POST", "/v1/tokens", json={"name": "acme-boss", "role": "admin",
                                                        "tenant": "acme"})
        assert made.status_code == 201, made.text
        member = await d.call("POST", "/v1/tokens", json={"name": "dev", "role": "member"})
        d.write(BASE.replace("concurrency = 2", "concurrency = 9"))
        refused = {
            "no token": (await d.reload(None), 401),
            "operator": (await d.reload(OPERATOR), 403),
            "admin scoped to a tenant (configuration)": (await d.reload(ACME_ADMIN), 403),
            "admin bound to a tenant (named)": (await d.reload(made.json()["token"]), 403),
            "member": (await d.reload(member.json()["token"]), 403),
            "not a token": (await d.reload("x" * 40), 401),
        }
        for who, (answer, status) in refused.items():
            assert answer.status_code == status, (who, answer.text)
        assert await d.concurrency() == 2  # none of them changed anything
        scoped = refused["admin scoped to a tenant (configuration)"][0]
        assert "every agent" in scoped.json()["error"]["message"]
        done = await d.reload()
        assert done.status_code == 200, done.text
        assert done.json()["applied"] == ["providers.openai.concurrency"]
        assert await d.concurrency() == 9
        rows = (await d.call("GET", "/v1/audit", params={"action": "config.reload"})).json()
        [row] = rows["rows"]
        assert (row["actor"], row["role"], row["outcome"]) == ("token-1", "admin", "allowed")
        assert row["details"]["applied"] == ["providers.openai.concurrency"]


# -- bad files ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "field", "words"), [
    pytest.param('tokens = ["unclosed', None, "not valid TOML", id="syntax"),
    pytest.param("prot = 5\n" + BASE, "prot", "did you mean 'port'", id="unknown key"),
    pytest.param(BASE.replace("[access.token-2]", "[access.token-2]\nrol = 'x'"),
                 "access.token-2.rol", "Extra inputs", id="unknown key in a table"),
    pytest.param(BASE.replace("concurrency = 2", "concurrency = 0"),
                 "providers.openai.concurrency", "greater than or equal to 1",
                 id="value out of range"),
    pytest.param('log_level = "LOUD"\n' + BASE, "log_level", "no log level",
                 id="log level"),
    pytest.param(BASE + "[tenants.beta]\nweight = -1\n", "tenants.beta.weight",
                 "greater than 0", id="tenant weight"),
    pytest.param(BASE + '[access.token-9]\nagents = ["x"]\n', None, "token-9",
                 id="a scope for a token that does not exist"),
    pytest.param(BASE + '[models.corp]\nprovider = "nope"\n', "models.corp.provider",
                 "unknown provider", id="named endpoint"),
])
async def test_a_bad_file_changes_nothing_and_says_why(
        tmp_path: Path, store_url: str, text: str, field: str | None, words: str) -> None:
    async with daemon(tmp_path, store_url) as d:
        # Every bad file also raises the limit and replaces the operator's token:
        # neither may happen.
        d.write(text.replace("concurrency = 2", "concurrency = 7").replace(OPERATOR, LATER))
        answer = await d.reload()
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "invalid_config"
        assert words in error["message"] and "nothing was changed" in error["message"]
        assert error["details"]["file"] == str(d.file)
        fields = [e["field"] for e in error["details"]["errors"]]
        assert (field in fields) if field else True, error
        assert await d.concurrency() == 2
        assert (await d.call("GET", "/v1/agents", OPERATOR)).status_code == 200
        assert d.runtime.reloader.generation == 0
        rows = (await d.call("GET", "/v1/audit", params={"action": "config.reload"})).json()
        assert [r["outcome"] for r in rows["rows"]] == ["denied"]
        # Fixed: the next reload applies it.
        d.write(BASE.replace("concurrency = 2", "concurrency = 7"))
        assert (await d.reload()).json()["applied"] == ["providers.openai.concurrency"]
        assert await d.concurrency() == 7


async def test_live_settings_that_clash_with_what_runs_change_nothing() -> None:
    """A check spanning a live and a restart-only setting is made on what would run:
    ``access`` needs ``auth = "token"``, and the daemon runs without tokens until it
    restarts, whatever the file now says."""
    running = Settings(_env_file=None, auth="none", tokens=[ADMIN])
    new = Settings(_env_file=None, auth="token", tokens=[ADMIN],
                   access={"token-1": {"agents": ["support"]}})
    reloader = Reloader(running, load=lambda: new)
    with pytest.raises(ConfigInvalid) as caught:
        await reloader.reload()
    assert "restart kept as they run" in caught.value.message
    assert "needs auth" in caught.value.message
    assert running.access == {} and reloader.generation == 0


# -- what needs a restart ------------------------------------------------------------


async def test_restart_only_changes_are_reported_not_applied(tmp_path: Path,
                                                             store_url: str) -> None:
    async with daemon(tmp_path, store_url) as d:
        same = await d.reload()
        assert same.json() == {"applied": [], "restart_required": [], "unchanged": True,
                               "file": str(d.file)}
        d.write("port = 1\ntool_workers = 3\nlease_ttl_s = 99.0\n" +
                BASE.replace("concurrency = 2", "concurrency = 4") + """
[sandbox]
snapshot_max_mb = 7
[telemetry]
metrics = false
""")
        for _ in range(2):  # (and again: still not applied, still reported)
            answer = await d.reload()
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["restart_required"] == ["lease_ttl_s", "port",
                                                "sandbox.snapshot_max_mb",
                                                "telemetry.metrics", "tool_workers"]
        assert body["unchanged"] is False
        settings = d.runtime.settings
        assert (settings.port, settings.tool_workers, settings.lease_ttl_s) != (1, 3, 99.0)
        assert settings.sandbox.snapshot_max_mb != 7 and settings.telemetry.metrics
        assert (await d.call("GET", "/metrics")).status_code == 200  # still served
        assert await d.concurrency() == 4  # what is live in the same file did apply


async def test_a_lanes_scope_takes_a_restart(tmp_path: Path, store_url: str) -> None:
    """Whether the cluster's nodes share a lane is decided at start: a reload reports
    a change of it and keeps the scope the lane runs with, while the same lane's
    limits change live."""
    async with daemon(tmp_path, store_url) as d:
        d.write(BASE.replace("concurrency = 2", 'concurrency = 5\nscope = "node"'))
        answer = await d.reload()
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["restart_required"] == ["providers.openai.scope"]
        assert body["applied"] == ["providers.openai.concurrency"]
        assert d.runtime.settings.providers["openai"].scope == "cluster"
        assert await d.concurrency() == 5


# -- what is live --------------------------------------------------------------------


async def test_tokens_roles_and_scopes_change_at_the_next_request(tmp_path: Path,
                                                                  store_url: str) -> None:
    async with daemon(tmp_path, store_url) as d:
        assert (await d.call("GET", "/v1/agents", LATER)).status_code == 401
        # The operator's token goes, a new one comes, the scoped admin becomes a viewer
        # (the configuration's tokens are named by their place: token-2 is ACME_ADMIN
        # now, token-3 the new one, an admin as a token without a scope is).
        d.write(f"""
tokens = ["{ADMIN}", "{ACME_ADMIN}", "{LATER}"]

[access.token-2]
role = "viewer"
tenants = ["acme"]

[tenants.acme.quotas]
agents = 1

[providers.openai]
concurrency = 2
""")
        answer = await d.reload()
        assert answer.status_code == 200, answer.text
        assert answer.json()["applied"] == ["access.token-2.role", "access.token-2.tenants",
                                            "access.token-3", "tokens"]
        gone = await d.call("GET", "/v1/agents", OPERATOR)
        assert gone.status_code == 401 and gone.headers["www-authenticate"] == "Bearer"
        assert (await d.call("GET", "/v1/agents", LATER)).status_code == 200
        listed = {t["name"]: t for t in (await d.call("GET", "/v1/tokens")).json()["tokens"]}
        assert (listed["token-2"]["role"], listed["token-3"]["role"]) == ("viewer", "admin")
        wrote = await d.call("POST", "/v1/agents", ACME_ADMIN, json={"name": "acme.x"})
        assert wrote.status_code == 403 and "viewer" in wrote.text
        assert (await d.reload(LATER)).status_code == 200  # the new admin may reload


async def test_tenant_quotas_change_live(tmp_path: Path, store_url: str) -> None:
    async with daemon(tmp_path, store_url) as d:
        first = await d.call("POST", "/v1/agents", json={"name": "acme.one",
                                                         "settings": {"tenant": "acme"}})
        assert first.status_code == 201, first.text
        second = {"name": "acme.two", "settings": {"tenant": "acme"}}
        over = await d.call("POST", "/v1/agents", json=second)
        assert over.status_code == 403 and over.json()["error"]["code"] == "quota_exceeded"
        d.write(BASE.replace("agents = 1", "agents = 3\nspend_usd_per_day = 2.5"))
        answer = await d.reload()
        assert answer.json()["applied"] == ["tenants.acme.quotas.agents",
                                            "tenants.acme.quotas.spend_usd_per_day"]
        assert (await d.call("POST", "/v1/agents", json=second)).status_code == 201
        tenant = (await d.call("GET", "/v1/tenants/acme")).json()
        assert tenant["quotas"] == {"agents": 3, "spend_usd_per_day": 2.5}
        # The tenant's day budget now holds the spend quota (what the kernel checks).
        budget = d.runtime.identity.tenants.budget("acme")
        assert budget is not None and budget.day.cost_usd == 2.5


@pytest.mark.no_replay  # (the daemon's policy changes between its runs)
async def test_a_policy_change_applies_to_the_next_run(tmp_path: Path, store_url: str
                                                       ) -> None:
    async with daemon(tmp_path, store_url) as d:
        made = await d.call("POST", "/v1/agents", json={"name": "calc",
                                                        "tools": ["calculator"]})
        assert made.status_code == 201, made.text

        async def tool_result(key: str) -> dict[str, Any]:
            sent = await d.call("POST", f"/v1/agents/calc/sessions/{key}/messages",
                                json={"content": '/tool calculator {"expression": "6*7"}'})
            assert sent.status_code == 200 and sent.json()["status"] == "completed"
            events = (await d.call("GET", f"/v1/agents/calc/sessions/{key}/events")).json()
            [done] = [e["data"] for e in events["events"] if e["kind"] == "tool.finished"]
            return done

        allowed = await tool_result("before")
        assert not allowed.get("denied") and "42" in allowed["output"]
        d.write(BASE + '[[policy.rules]]\ntool = "calculator"\naction = "deny"\n'
                       'reason = "no arithmetic today"\n')
        assert (await d.reload()).json()["applied"] == ["policy.rules"]
        denied = await tool_result("after")
        assert denied["denied"] is True and "no arithmetic today" in denied["output"]


async def test_an_awake_agent_takes_a_changed_named_endpoint_at_its_next_run(
        tmp_path: Path, store_url: str) -> None:
    with StubLLMServer() as first, StubLLMServer() as second:
        endpoint = '[models.corp]\nbase_url = "{}"\n'
        async with daemon(tmp_path, store_url, BASE + endpoint.format(first.base_url)) as d:
            made = await d.call("POST", "/v1/agents", json={"name": "helper",
                                                            "model": "corp:m"})
            assert made.status_code == 201, made.text
            first.enqueue("from the first")
            second.enqueue("from the second")
            path = "/v1/agents/helper/sessions/s/messages"
            one = await d.call("POST", path, json={"content": "hi"})
            assert one.json()["output"] == "from the first", one.text
            assert d.runtime.is_awake("helper")
            d.write(BASE + endpoint.format(second.base_url))
            assert (await d.reload()).json()["applied"] == ["models.corp.base_url"]
            two = await d.call("POST", path, json={"content": "again"})
            assert two.json()["output"] == "from the second", two.text
            assert len(first.requests) == 1 and len(second.requests) == 1
            # Taken out: the agent's next run fails saying so; nothing is sent.
            d.write(BASE)
            assert (await d.reload()).json()["applied"] == ["models.corp"]
            three = await d.call("POST", path, json={"content": "once more"})
            assert three.json()["status"] == "failed", three.text
            assert "corp" in three.json()["error"]["message"]
            assert len(first.requests) == len(second.requests) == 1


async def test_logging_level_and_format_change_on_the_daemons_handler(
        tmp_path: Path, store_url: str) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter(Redactor()))
    level = root.level
    root.addHandler(handler)
    try:
        async with daemon(tmp_path, store_url) as d:
            d.write('log_level = "debug"\n' + BASE + '[telemetry]\nlog_format = "json"\n')
            answer = await d.reload()
            assert answer.json()["applied"] == ["log_level", "telemetry.log_format"]
            assert root.level == logging.DEBUG
            assert isinstance(handler.formatter, JsonFormatter)
            # A token the reload brings is redacted from the log lines from now on.
            d.write('log_level = "debug"\n' + BASE.replace(
                f'"{ADMIN}",', f'"{ADMIN}", "{LATER}",') + '[telemetry]\nlog_format = "json"\n')
            await d.reload()
            line = handler.format(logging.LogRecord("x", logging.INFO, "", 0,
                                                    f"saw {LATER}", None, None))
            assert LATER not in line and "<redacted>" in line
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_concurrent_reloads_run_one_after_the_other(tmp_path: Path, store_url: str
                                                          ) -> None:
    async with daemon(tmp_path, store_url) as d:
        d.write(BASE.replace("concurrency = 2", "concurrency = 5"))
        answers = await asyncio.gather(*(d.reload() for _ in range(4)))
        bodies = sorted((a.json() for a in answers), key=lambda b: b["unchanged"])
        # The first applied it; each later one compared with what it applied.
        assert bodies[0]["applied"] == ["providers.openai.concurrency"]
        assert [b["unchanged"] for b in bodies] == [False, True, True, True]
        assert d.runtime.reloader.generation == 1
        assert await d.concurrency() == 5


async def test_termo_routes_drop_a_removed_token_too(tmp_path: Path, store_url: str) -> None:
    termo = '[termo]\nadapter = "agentd.testing.termo_adapter:Minimal"\nagent = "bot"\n'
    async with daemon(tmp_path, store_url, BASE + termo) as d:
        body = {"message": "hi", "session_key": "u:1"}
        sent = await d.call("POST", "/api/send", OPERATOR, json=body)
        assert sent.json() == {"response": "minimal: hi", "session_key": "u:1"}, sent.text
        d.write(BASE.replace(OPERATOR, LATER) + termo)
        assert (await d.reload()).json()["applied"] == ["tokens"]
        assert (await d.call("POST", "/api/send", OPERATOR, json=body)).status_code == 401
        assert (await d.call("POST", "/api/send", LATER, json=body)).status_code == 200


@pytest.mark.no_replay  # (the daemon's settings change between its runs)
async def test_retries_and_breakers_apply_to_the_runs_that_start_next(
        tmp_path: Path, store_url: str) -> None:
    with StubLLMServer() as stub:
        endpoint = f'[models.corp]\nbase_url = "{stub.base_url}"\n'
        once = "retry_attempts = 1\n" + BASE + endpoint
        async with daemon(tmp_path, store_url, once) as d:
            made = await d.call("POST", "/v1/agents", json={
                "name": "flaky", "model": "corp:m", "settings": {"on_outage": "fail"}})
            assert made.status_code == 201, made.text
            path = "/v1/agents/flaky/sessions/s/messages"
            stub.enqueue(fault="http_503")
            failed = await d.call("POST", path, json={"content": "one"})
            assert failed.json()["status"] == "failed", failed.text
            assert len(stub.requests) == 1  # no retry
            d.write("retry_attempts = 3\nretry_base_s = 0.01\nretry_max_s = 0.02\n"
                    "breaker_failures = 9\n" + BASE + endpoint)
            assert (await d.reload()).json()["applied"] == [
                "breaker_failures", "retry_attempts", "retry_base_s", "retry_max_s"]
            stub.enqueue(fault="http_503")
            stub.enqueue(fault="http_503")
            stub.enqueue("third time lucky")
            done = await d.call("POST", path, json={"content": "two"})
            assert done.json()["output"] == "third time lucky", done.text
            assert len(stub.requests) == 4
            # The breaker the failures made keeps its count, with the new threshold.
            [breaker] = d.runtime.kernel.breakers.values()
            assert breaker.settings.failures == 9 and breaker.state == "closed"

"""``/v1/evals`` over the HTTP API (ASGI), SQLite and PostgreSQL: suites, cases, eval
runs and results like other objects, with the same scopes; and the attacks a token may
try through them: another tenant's agent or run, an imported case carrying what a case
from a run could not (approvals, restores, who pays, a network grant), a judge or a
candidate with a setting only an operator may set, oversized input. Each refusal writes
nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import WORKER_UID_BASE
from tests.identity._daemon import ADMIN as ID_ADMIN
from tests.identity._daemon import daemon
from tests.identity._daemon import settings_for as identity_settings
from tests.server._scopes import (
    ACME,
    ADMIN,
    GLOBEX,
    auth,
    scoped_daemon,
    seed,
    settings_for,
    settled,
    unchanged,
)

from agentd.config import EvalsConfig, SandboxConfig


async def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def test_suites_cases_runs_and_results_over_http(tmp_path: Path, store_url: str
                                                       ) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (_runtime, api):
        acme = await seed(api, "acme-bot")
        await seed(api, "globex-bot")
        h = auth(ACME)
        suite = await _ok(await api.post("/v1/evals/suites", headers=h, json={
            "agent": "acme-bot", "name": "regress", "gate": {"min_pass_rate": 0.5}}), 201)
        assert suite["gate"] == {"min_pass_rate": 0.5} and suite["cases"] == 0
        made = await _ok(await api.post(f"/v1/evals/suites/{suite['id']}/cases", headers=h,
                                        json={"from_run": acme.ids["run_id"], "name": "hi",
                                              "graders": [{"kind": "regex",
                                                           "pattern": "hello"}]}), 201)
        [case] = made["cases"]
        assert case["name"] == "hi" and case["baseline"]["status"] == "completed"
        listed = await _ok(await api.get(f"/v1/evals/suites/{suite['id']}/cases",
                                         headers=h))
        assert [c["id"] for c in listed["cases"]] == [case["id"]]
        queued = await _ok(await api.post(f"/v1/evals/suites/{suite['id']}/runs", headers=h,
                                          json={}), 202)
        assert queued["status"] in ("queued", "running") and queued["cases"] == 1
        done = await _ok(await api.get(f"/v1/evals/runs/{queued['id']}", headers=h,
                                       params={"wait": "true"}))
        assert done["status"] == "completed" and done["summary"]["passed"] == 1, done
        results = await _ok(await api.get(f"/v1/evals/runs/{done['id']}/results",
                                          headers=h))
        assert [r["status"] for r in results["results"]] == ["passed"]
        junit = await api.get(f"/v1/evals/runs/{done['id']}/junit", headers=h)
        assert junit.status_code == 200 and junit.headers["content-type"].startswith(
            "application/xml") and b"<testsuites" in junit.content
        export = await api.get(f"/v1/evals/suites/{suite['id']}/export", headers=h)
        assert export.headers["content-type"].startswith("application/x-ndjson")
        assert len(export.text.splitlines()) == 2
        bad = await api.get(f"/v1/evals/runs/{done['id']}/results", headers=h,
                            params={"status": "won"})
        assert bad.status_code == 422, bad.text
        # Lists show the token's agents' suites only; a suite is found by name.
        mine = await _ok(await api.get("/v1/evals/suites", headers=h))
        assert {s["agent"] for s in mine["suites"]} == {"acme-bot"}
        theirs = await _ok(await api.get("/v1/evals/suites", headers=auth(GLOBEX)))
        assert "acme-bot" not in str(theirs)
        named = await _ok(await api.get("/v1/evals/suites", headers=h,
                                        params={"name": "regress"}))
        assert [s["id"] for s in named["suites"]] == [suite["id"]]
        # Deleting the eval run, then the suite; the seeded suite stays.
        await _ok(await api.delete(f"/v1/evals/runs/{done['id']}", headers=h), 204)
        await _ok(await api.delete(f"/v1/evals/suites/{suite['id']}", headers=h), 204)
        gone = await api.get(f"/v1/evals/suites/{suite['id']}", headers=h)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "suite_not_found"


async def test_another_tenants_agent_or_run_is_as_none(tmp_path: Path, store_url: str
                                                        ) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (runtime, api):
        acme = await seed(api, "acme-bot")
        globex = await seed(api, "globex-bot")
        before = await settled(runtime)
        stranger = auth(GLOBEX)
        # A suite for acme's agent: as for an agent that does not exist.
        out = await api.post("/v1/evals/suites", headers=stranger,
                             json={"agent": "acme-bot", "name": "steal"})
        none = await api.post("/v1/evals/suites", headers=stranger,
                              json={"agent": "nobody-bot", "name": "steal"})
        assert out.status_code == none.status_code == 404
        assert out.text.replace("acme-bot", "X") == none.text.replace("nobody-bot", "X")
        # A case of globex's suite from acme's run: as for a run that does not exist.
        suite = globex.ids["suite_id"]
        out = await api.post(f"/v1/evals/suites/{suite}/cases", headers=stranger,
                             json={"from_run": acme.ids["run_id"]})
        none = await api.post(f"/v1/evals/suites/{suite}/cases", headers=stranger,
                              json={"from_run": "r_0ghost0000000"})
        assert out.status_code == none.status_code == 404, out.text
        assert out.text.replace(acme.ids["run_id"], "X") == none.text.replace(
            "r_0ghost0000000", "X")
        # Even the admin cannot give one agent's suite another agent's run.
        out = await api.post(f"/v1/evals/suites/{suite}/cases", headers=auth(ADMIN),
                             json={"from_run": acme.ids["run_id"]})
        assert out.status_code == 422 and "agent 'acme-bot'" in out.text, out.text
        await unchanged(runtime, before)


def _case(**over: Any) -> dict[str, Any]:
    """An imported case: a history, a message, a recorded run."""
    case: dict[str, Any] = {
        "name": "imported",
        "input": {"history": [], "message": {"content": "hi"}},
        "baseline": {"run": {"run_id": "r_elsewhere", "status": "completed",
                             "output": "echo: hi", "steps": 1},
                     "events": [
                         {"seq": 1, "kind": "message.user", "data": {"content": "hi"}},
                         {"seq": 2, "kind": "message.assistant", "data": {
                             "text": "echo: hi", "tool_calls": [], "usage": None,
                             "finish_reason": "stop", "model": "scripted", "step": 1}},
                         {"seq": 3, "kind": "run.completed", "data": {
                             "output": "echo: hi", "steps": 1}}]},
        "graders": [{"kind": "exact"}]}
    for key, value in over.items():
        target = case
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return case


async def test_an_imported_case_holds_no_more_than_a_case_from_a_run(
        tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # (an operator's private endpoint: a network grant covering it is operator-only)
    settings = identity_settings(tmp_path, store_url,
                                 evals=EvalsConfig(max_case_bytes=64 * 1024),
                                 sandbox=SandboxConfig(
                                     uid_base=WORKER_UID_BASE, uid_count=20_000,
                                     private_endpoints=["db.internal:5432"]))
    async with daemon(settings) as d:
        member = await d.mint("acme-dev", "member", tenant="acme")
        made = await d.call("POST", "/v1/agents", ID_ADMIN, json={
            "name": "acme.bot", "settings": {"tenant": "acme"}})
        assert made.status_code == 201, made.text
        suite = (await d.call("POST", "/v1/evals/suites", member, json={
            "agent": "acme.bot", "name": "imports"})).json()
        path = f"/v1/evals/suites/{suite['id']}/cases"
        refused: list[tuple[dict[str, Any], int, str]] = [
            # Approvals, restores, subtasks in a history: not a conversation.
            (_case(input__history=[{"kind": "approval.requested", "data": {}}]), 422,
             "input.history[0]"),
            (_case(input__history=[{"kind": "session.restored",
                                    "data": {"to_seq": 99}}]), 422, "input.history[0]"),
            # A session policy only an operator may set (a network grant).
            (_case(input__policy={"network": True}), 403, "input.policy"),
            # A judge only an operator may point (a base URL).
            (_case(graders=[{"kind": "rubric", "rubric": "x", "model": "openai:gpt-4.1",
                             "settings": {"base_url": "http://127.0.0.1:9/v1"}}]), 403,
             "base_url"),
            # Events without their order; a step the recording does not have.
            (_case(baseline__events=[{"kind": "message.user", "data": {}}]), 422,
             "baseline.events"),
            (_case(from_step=5), 422, "from_step"),
            (_case(graders=[{"kind": "regex", "pattern": "(x+)+y"}]), 422, "pattern"),
            # Too big as stored.
            (_case(input__message={"content": "x" * 100_000}), 413, "bytes"),
        ]
        for case, status, where in refused:
            out = await d.call("POST", path, member, json={"cases": [case]})
            assert out.status_code == status and where in out.text, (status, out.text)
        out = await d.call("POST", path, member, json={"cases": [_case()] * 1001})
        assert out.status_code == 422, out.text
        listed = await d.call("GET", path, member)
        assert listed.json()["cases"] == []
        # Who pays, a chain, a trace: dropped; what the message was: kept.
        out = await d.call("POST", path, member, json={"cases": [_case(input__message={
            "content": "hi", "payer": "a_someone_else", "chain": ["x"], "depth": 0,
            "instructions": "be brief", "tainted": "came from a web page"})]})
        assert out.status_code == 201, out.text
        case = await d.runtime.store.get_case(out.json()["cases"][0]["id"])
        assert case is not None and case.input is not None
        assert case.input["message"] == {"content": "hi", "instructions": "be brief",
                                         "tainted": "came from a web page"}
        assert case.input["workspace"] is None and case.source["imported"] is True
        run = (await d.call("POST", f"/v1/evals/suites/{suite['id']}/runs", member,
                            json={"wait": True})).json()
        assert run["summary"]["total"] == 1, run
        # The fork ran as its own agent's, tainted as its message said.
        [result] = (await d.call("GET", f"/v1/evals/runs/{run['id']}/results",
                                 member)).json()["results"]
        assert result["status"] == "passed", result


async def test_a_candidate_gains_nothing_its_token_could_not_set(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(identity_settings(tmp_path, store_url)) as d:
        member = await d.mint("acme-dev", "member", tenant="acme")
        await d.call("POST", "/v1/agents", ID_ADMIN, json={
            "name": "acme.bot", "settings": {"tenant": "acme"}})
        sent = await d.call("POST", "/v1/agents/acme.bot/sessions/s/messages", member,
                            json={"content": "hi", "wait": True})
        suite = (await d.call("POST", "/v1/evals/suites", member, json={
            "agent": "acme.bot", "name": "s"})).json()
        await d.call("POST", f"/v1/evals/suites/{suite['id']}/cases", member,
                     json={"from_run": sent.json()["id"]})
        runs = f"/v1/evals/suites/{suite['id']}/runs"
        for body, status in (({"model": "openai:gpt-4.1", "settings": {
                                  "base_url": "http://127.0.0.1:9/v1"}}, 403),
                             ({"settings": {"tenant": "other"}}, 403),
                             ({"model": "nosuch:model"}, 422),
                             ({"tools": "sometimes"}, 422),
                             ({"concurrency": 0}, 422)):
            out = await d.call("POST", runs, member, json=body)
            assert out.status_code == status, (body, out.text)
        assert (await d.call("GET", runs, member)).json()["runs"] == []

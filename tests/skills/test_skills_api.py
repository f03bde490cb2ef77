"""/v1/skills and /v1/agents/{name}/skills over real HTTP (ASGITransport), on SQLite and
PostgreSQL: install (archives; folders for admins only), list, show, remove; enable
and disable per agent; every bad input a 4xx naming its field, nothing half-made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from tests.conftest import asgi_client
from tests.skills._kit import folder, good_files, skill_md, tar_of, zip_of

from agentd.assembly import Runtime
from agentd.config import Settings

ZIP = {"Content-Type": "application/zip"}


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("details", {}).get("errors", [])]


async def test_install_list_show_remove(settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as api:
        assert (await api.get("/v1/skills")).json() == {"skills": []}
        made = await api.post("/v1/skills", content=zip_of(good_files()), headers=ZIP)
        assert made.status_code == 201, made.text
        skill = made.json()
        assert skill["name"] == "pdf-tools" and skill["files"] == [
            "SKILL.md", "scripts/extract.py"]
        assert skill["hash"].startswith("sha256:") and skill["installed_at"].endswith("Z")
        listed = (await api.get("/v1/skills")).json()["skills"]
        assert [s["name"] for s in listed] == ["pdf-tools"]
        shown = (await api.get("/v1/skills/pdf-tools")).json()
        assert shown["body"].startswith("# PDF tools") and shown["hash"] == skill["hash"]

        again = await api.post("/v1/skills", content=tar_of(good_files(description="v2")),
                               headers={"Content-Type": "application/gzip"})
        error(again, 409, "skill_exists")
        replaced = await api.post("/v1/skills?replace=true",
                                  content=tar_of(good_files(description="v2")),
                                  headers={"Content-Type": "application/gzip"})
        assert replaced.status_code == 201 and replaced.json()["description"] == "v2"

        assert (await api.delete("/v1/skills/pdf-tools")).status_code == 204
        error(await api.get("/v1/skills/pdf-tools"), 404, "skill_not_found")
        error(await api.delete("/v1/skills/pdf-tools"), 404, "skill_not_found")
        error(await api.get("/v1/skills/Bad_Name"), 422, "invalid_input")


async def test_bad_packages_are_4xx_naming_the_field(settings: Settings, runtime: Runtime
                                                     ) -> None:
    async with asgi_client(settings, runtime) as api:
        cases = [
            (zip_of(good_files("Bad_Name"), top="Bad_Name"), "SKILL.md.name"),
            (zip_of({"SKILL.md": "no front matter"}), "SKILL.md"),
            (zip_of({"SKILL.md": "---\nname: pdf-tools\n---\n"}), "SKILL.md.description"),
            (zip_of({"SKILL.md": skill_md(), "../x": "y"}, top=None), "archive"),
            (b"plain text", "archive"),
        ]
        for data, where in cases:
            body = error(await api.post("/v1/skills", content=data, headers=ZIP), 422,
                         "invalid_skill")
            assert fields(body) == [where], body
        assert (await api.get("/v1/skills")).json() == {"skills": []}
        assert [p.name for p in (settings.home / "skills").iterdir()] == [".store"] or \
            sorted(p.name for p in (settings.home / "skills").iterdir()) == [
                ".staging", ".store"]
        assert not list((settings.home / "skills" / ".store").iterdir())


async def test_a_folder_on_the_host_is_for_admins_only(tmp_path: Path, store_url: str
                                                       ) -> None:
    settings = Settings(home=tmp_path / "home", demo_agent=False, database_url=store_url,
                        tokens=["admin-token-0123456789", "user-token-0123456789",
                                "member-token-0123456789"],
                        admin_tokens=["token-1"],
                        access={"token-2": {"role": "operator"}})
    source = folder(tmp_path / "src")
    runtime = await Runtime.open(settings)
    try:
        async with asgi_client(settings, runtime) as api:
            user = {"Authorization": "Bearer user-token-0123456789"}
            admin = {"Authorization": "Bearer admin-token-0123456789"}
            member = {"Authorization": "Bearer member-token-0123456789"}
            denied = await api.post("/v1/skills", json={"path": str(source)}, headers=user)
            assert error(denied, 403, "forbidden")["details"]["field"] == "body.path"
            # Skills are daemon-wide: a member installs none, not even from an archive.
            member_denied = await api.post("/v1/skills", content=zip_of(good_files()),
                                           headers={**ZIP, **member})
            assert "operator" in error(member_denied, 403, "forbidden")["message"]
            anonymous = await api.post("/v1/skills", content=zip_of(good_files()),
                                       headers=ZIP)
            error(anonymous, 401, "unauthorized")
            typo = await api.post("/v1/skills", json={"paht": str(source)}, headers=admin)
            assert "body.paht" in str(error(typo, 422, "invalid_input"))
            made = await api.post("/v1/skills", json={"path": str(source)}, headers=admin)
            assert made.status_code == 201, made.text
            # An operator may still upload an archive.
            other = await api.post("/v1/skills",
                                   content=zip_of(good_files("other"), top="other"),
                                   headers={**ZIP, **user})
            assert other.status_code == 201, other.text
    finally:
        await runtime.close()


async def test_enable_and_disable_per_agent(settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as api:
        await api.post("/v1/skills", content=zip_of(good_files()), headers=ZIP)
        assert (await api.post("/v1/agents", json={"name": "a"})).status_code == 201
        on = await api.put("/v1/agents/a/skills/pdf-tools")
        assert on.status_code == 200 and on.json()["settings"]["skills"] == {
            "enabled": ["pdf-tools"]}
        again = await api.put("/v1/agents/a/skills/pdf-tools")
        assert again.json()["settings"]["skills"]["enabled"] == ["pdf-tools"]
        error(await api.put("/v1/agents/a/skills/nope"), 404, "skill_not_found")
        error(await api.put("/v1/agents/ghost/skills/pdf-tools"), 404, "agent_not_found")
        off = await api.delete("/v1/agents/a/skills/pdf-tools")
        assert off.json()["settings"]["skills"]["enabled"] == []

        # The settings path checks the names too.
        bad = await api.patch("/v1/agents/a", json={"settings": {"skills": {
            "enabled": ["pdf-tools", "nope"]}}})
        assert fields(error(bad, 422, "skill_not_found")) == [
            "body.settings.skills.enabled[1]"]
        bad = await api.post("/v1/agents", json={"name": "b", "settings": {"skills": {
            "enabled": ["Not-A-Name"]}}})
        assert "body.settings.skills.enabled.0" in str(bad.json()) or \
            "settings.skills.enabled" in str(bad.json())
        assert bad.status_code == 422
        error(await api.get("/v1/agents/b"), 404, "agent_not_found")
        dup = await api.patch("/v1/agents/a", json={"settings": {"skills": {
            "enabled": ["pdf-tools", "pdf-tools"]}}})
        assert dup.status_code == 422 and "twice" in dup.text
        assert (await api.get("/v1/agents/a")).json()["settings"]["skills"] == {
            "enabled": []}

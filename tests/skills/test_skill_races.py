"""Enabling and disabling skills concurrently loses none (SQLite and PostgreSQL): the
change is a compare-and-set on the agent's record in the store, so concurrent
requests, on one daemon or on two sharing the store, each land."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.conftest import asgi_client
from tests.skills._kit import good_files, zip_of

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import Conflict

NAMES = [f"s{i}" for i in range(12)]


async def install(runtime: Runtime) -> None:
    for name in NAMES:
        await runtime.skills.registry.install_archive(
            zip_of(good_files(name, description=f"Skill {name}."), top=name))


async def enabled(runtime: Runtime, agent: str = "a") -> list[str]:
    record = await runtime.store.get_agent(agent)
    return list(record.settings.get("skills", {}).get("enabled", []))


async def test_a_stale_change_is_refused_by_the_store(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"max_steps": 5})
    stale = await runtime.store.get_agent("a")
    await runtime.store.update_agent("a", {"settings": {"max_steps": 6}},
                                     based_on=stale.updated_at)
    with pytest.raises(Conflict) as caught:
        await runtime.store.update_agent("a", {"settings": {"max_steps": 7}},
                                         based_on=stale.updated_at)
    assert caught.value.code == "agent_changed" and caught.value.retryable
    assert (await runtime.store.get_agent("a")).settings == {"max_steps": 6}


async def test_concurrent_requests_lose_no_change(settings: Settings, runtime: Runtime
                                                  ) -> None:
    await install(runtime)
    async with asgi_client(settings, runtime) as api:
        assert (await api.post("/v1/agents", json={"name": "a"})).status_code == 201
        answers = await asyncio.gather(*(api.put(f"/v1/agents/a/skills/{name}")
                                         for name in NAMES))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sorted(await enabled(runtime)) == sorted(NAMES)
        # Half disabled while the other half is enabled again (no change): exactly the
        # other half remain.
        answers = await asyncio.gather(*(
            api.delete(f"/v1/agents/a/skills/{name}") if i % 2 else
            api.put(f"/v1/agents/a/skills/{name}") for i, name in enumerate(NAMES)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sorted(await enabled(runtime)) == sorted(NAMES[::2])
        shown = (await api.get("/v1/agents/a")).json()["settings"]["skills"]["enabled"]
        assert sorted(shown) == sorted(NAMES[::2])


async def test_two_daemons_sharing_the_store_lose_no_change(tmp_path: Path,
                                                            store_url: str) -> None:
    """Two nodes (PostgreSQL, or two runtimes on one SQLite file) each with the skills
    installed, enabling different skills of one agent at the same time: each reads
    the agent from the store and writes only if it is unchanged, so none is lost
    (with a lock per process only, each would write its own read-modify-write)."""
    runtimes = [await Runtime.open(Settings(home=tmp_path / f"node{i}", demo_agent=False,
                                            database_url=store_url, node_id=f"n{i}"))
                for i in range(2)]
    try:
        for runtime in runtimes:
            await install(runtime)
        await runtimes[0].create_agent(name="a")
        await runtimes[1].get_agent("a")  # awake on both: each has it cached
        await asyncio.gather(*(runtimes[i % 2].skills.enable("a", name)
                               for i, name in enumerate(NAMES)))
        assert sorted(await enabled(runtimes[0])) == sorted(NAMES)
        await asyncio.gather(*(runtimes[i % 2].skills.disable("a", name)
                               for i, name in enumerate(NAMES) if i % 3))
        assert sorted(await enabled(runtimes[1])) == sorted(NAMES[::3])
    finally:
        for runtime in runtimes:
            await runtime.close()

"""Agent revisions (migration 24): the agent's model, instructions, tools and settings
at each change, written with the change; read back as of a time. SQLite and
PostgreSQL."""

from __future__ import annotations

from agentd.store import Store


async def test_each_change_is_a_revision_and_a_state_change_is_not(store: Store) -> None:
    made = await store.create_agent(name="a", model="scripted", instructions="one",
                                    tools=["peek"], settings={"max_steps": 5})
    assert await store.agent_as_of(made.id, made.created_at - 1) is None
    first = await store.agent_as_of(made.id, made.created_at)
    assert first is not None
    assert (first.instructions, first.tools, first.settings) == ("one", ["peek"],
                                                                 {"max_steps": 5})
    changed = await store.update_agent("a", {"instructions": "two", "tools": [],
                                             "settings": {"max_steps": 1}})
    paused = await store.update_agent("a", {"state": "paused"})
    # The revision before the change is still there, as of a time before it.
    assert changed.updated_at > made.created_at
    before = await store.agent_as_of(made.id, made.created_at)
    assert before is not None and before.instructions == "one" and before.tools == ["peek"]
    after = await store.agent_as_of(made.id, paused.updated_at)
    assert after is not None and after.instructions == "two"
    assert after.settings == {"max_steps": 1} and after.state == "paused"
    between = await store.agent_settings_between(made.id, made.created_at,
                                                 paused.updated_at)
    assert between == [(changed.updated_at, {"max_steps": 1})]  # (the state: none)
    await store.delete_agent("a")
    assert await store.agent_as_of(made.id, paused.updated_at) is None

"""agentd.client's agent pages and overview against the real app over a socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.client import APIError, Client
from agentd.security.tokens import read_token


@pytest.fixture
def client(live_url: str, live_home: Path) -> Iterator[Client]:
    with Client(live_url, token=read_token(live_home), timeout=30.0) as c:
        yield c


def test_pages_of_agents_and_the_overview(client: Client, agent_name: str) -> None:
    names = [f"{agent_name}-{i}" for i in range(5)]
    for name in names:
        client.create_agent(name)
    client.pause_agent(names[3])
    seen: list[str] = []
    after = None
    while True:
        page = client.agent_page(limit=2, q=agent_name, after=after)
        seen += [a["name"] for a in page["agents"]]
        assert all(isinstance(a["awake"], bool) for a in page["agents"])
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(names)
    paused = client.agent_page(q=agent_name, state=["paused", "stopped"])
    assert [a["name"] for a in paused["agents"]] == [names[3]]
    overview = client.overview()
    assert overview["agents"]["total"] >= 5 and overview["agents"]["by_state"]["paused"] >= 1
    with pytest.raises(APIError) as info:
        client.agent_page(state="asleep")
    assert (info.value.status, info.value.code) == (422, "invalid_input")

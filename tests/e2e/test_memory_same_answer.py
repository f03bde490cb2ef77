"""Memory gives the same answer twice (issue 31): a batch is stored through a real daemon
process, searched at once (through the API and by auto-recall in a turn), the daemon is
restarted, and the same searches rank the same entries in the same order. An entry is
found by its meaning from the moment its write is acknowledged: nothing depends on how
far background embedding got."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest
from tests.daemons import Spawn, create_agent, read_events, send

pytestmark = pytest.mark.e2e

TOPICS = ["gardening", "sailing", "chess", "baking", "astronomy", "pottery", "cycling",
          "painting", "opera", "hiking"]
FACT = "My sister moved to Lisbon in May."
QUERIES = ["where does my sibling live now?", "what hobby did I pick up for weekends?",
           "pottery class", "which instrument is being learned"]


def conversation() -> list[dict[str, Any]]:
    """300 turns about ten hobbies, the fact in the middle: enough that embedding them
    takes the daemon seconds (a search that waited for it, or went on without it,
    would show)."""
    turns = []
    for i in range(300):
        topic = TOPICS[i % len(TOPICS)]
        turns.append({"content": f"[session {i // 30}] Turn {i}: we talked about {topic} "
                                 f"again, {topic} on day {i % 7} with friend {i % 13}.",
                      "metadata": {"turn": i}})
    turns.insert(150, {"content": FACT, "metadata": {"turn": "fact"}})
    return turns


def searches(client: httpx.Client) -> list[list[tuple[str, float]]]:
    out = []
    for query in QUERIES:
        response = client.post("/v1/agents/mem/memory/search",
                               json={"query": query, "limit": 10})
        assert response.status_code == 200, response.text
        out.append([(h["id"], h["score"]) for h in response.json()["results"]])
    return out


def recalled(client: httpx.Client, key: str) -> list[str]:
    """The entries auto-recall put into the context of one turn on session ``key``."""
    answer = send(client, "mem", key, QUERIES[0], stream=False)
    assert answer.status_code in (200, 201), answer.text
    steps = [e for e in read_events(client, "mem", key) if e["kind"] == "message.assistant"]
    assert steps, "no step"
    return [e["id"] for e in steps[-1]["data"]["recalled"]["entries"]]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                          marks=pytest.mark.postgres)])
def test_a_batch_is_ranked_the_same_at_once_and_after_a_restart(
        spawn: Spawn, store: str, request: pytest.FixtureRequest) -> None:
    env = None if store == "sqlite" else {
        "AGENTD_DATABASE_URL": request.getfixturevalue("pg_url")}
    daemon = spawn(env=env)
    with daemon.client() as client:
        create_agent(client, "mem", model="scripted", settings={
            "memory": {"auto_recall": True, "recall_limit": 5}})
        written = client.post("/v1/agents/mem/memory/entries",
                              json={"entries": conversation()})
        assert written.status_code == 201, written.text
        fact_id = next(e["id"] for e in written.json()["entries"] if e["content"] == FACT)
        # At once: a turn's auto-recall (which never waits) and API searches.
        first_recall = recalled(client, "first")
        first = searches(client)
    daemon.signal_and_wait(signal.SIGTERM)

    again = spawn(env=env)
    with again.client() as client:
        assert searches(client) == first
        assert recalled(client, "second") == first_recall
    # By meaning: the paraphrase shares no word with the fact but "my".
    assert first[0][0][0] == fact_id
    assert fact_id in first_recall

"""agentd.client's long-term memory methods against the real app over a socket."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentd.client import APIError, Client
from agentd.security.tokens import read_token


@pytest.fixture
def client(live_url: str, live_home: Path) -> Iterator[Client]:
    with Client(live_url, token=read_token(live_home), timeout=60.0) as c:
        yield c


def _refused(call: object, status: int, code: str) -> APIError:
    assert callable(call)
    with pytest.raises(APIError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code), caught.value
    return caught.value


def test_write_list_read_change_forget(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name, model="scripted")
    first = client.add_entry(agent_name, "Ann drinks green tea.", tags=["pref", "ann"],
                             metadata={"source": "chat", "n": 2})
    assert first["created"] is True and first["id"].startswith("mem_")
    assert (first["content"], first["tags"], first["metadata"], first["tainted"]) == (
        "Ann drinks green tea.", ["pref", "ann"], {"source": "chat", "n": 2}, False)
    # The same content, differently cased and spaced: the stored entry, nothing new.
    again = client.add_entry(agent_name, "ann  DRINKS green tea.")
    assert (again["created"], again["id"]) == (False, first["id"])

    batch = client.add_entries(agent_name, [
        {"content": "The deploy window is Monday 10:00.", "tags": ["ops"]},
        {"content": "Ann drinks green tea."},
        {"content": "Text from a web page.", "tainted": True},
    ])
    assert batch["created"] == 2
    assert [e["created"] for e in batch["entries"]] == [True, False, True]
    assert batch["entries"][1]["id"] == first["id"]
    assert batch["entries"][2]["tainted"] is True

    page = client.list_entries(agent_name, limit=2)
    assert len(page["entries"]) == 2 and page["next_before"]
    rest = client.list_entries(agent_name, limit=2, before=page["next_before"])
    listed = [e["id"] for e in page["entries"] + rest["entries"]]
    assert listed == [e["id"] for e in client.iter_entries(agent_name, limit=2)]
    assert sorted(listed) == sorted({first["id"], *(e["id"] for e in batch["entries"])})
    assert [e["id"] for e in client.list_entries(agent_name, tags=["pref", "ann"])[
        "entries"]] == [first["id"]]
    assert client.list_entries(agent_name, tags=["pref", "ops"])["entries"] == []

    assert client.get_entry(agent_name, first["id"])["metadata"] == {"source": "chat", "n": 2}
    changed = client.update_entry(agent_name, first["id"], content="Ann drinks oolong.",
                                  tags=["pref"], version=1)
    assert (changed["content"], changed["tags"], changed["version"]) == (
        "Ann drinks oolong.", ["pref"], 2)
    # A stale version is refused and changes nothing.
    _refused(lambda: client.update_entry(agent_name, first["id"], content="x", version=1),
             409, "entry_changed")
    assert client.get_entry(agent_name, first["id"])["content"] == "Ann drinks oolong."
    vouched = client.update_entry(agent_name, batch["entries"][2]["id"], tainted=False)
    assert vouched["tainted"] is False

    client.delete_entry(agent_name, first["id"])
    _refused(lambda: client.get_entry(agent_name, first["id"]), 404, "entry_not_found")
    _refused(lambda: client.delete_entry(agent_name, first["id"]), 404, "entry_not_found")


def test_search_with_filters(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name, model="scripted",
                        settings={"memory": {"namespaces": ["team"]}})
    client.add_entries(agent_name, [
        {"content": "Ann drinks green tea every morning.", "tags": ["pref"],
         "metadata": {"who": "ann"}},
        {"content": "Bob drinks black coffee.", "tags": ["pref"], "metadata": {"who": "bob"}},
        {"content": "Release notes go out on Fridays.", "tags": ["ops"]},
        {"content": "Team tea is in the kitchen cupboard.", "namespace": "team",
         "tainted": True},
    ])
    hits = client.search_memory(agent_name, "green tea", limit=10)
    assert hits[0]["content"] == "Ann drinks green tea every morning."
    assert 0 < hits[-1]["score"] <= hits[0]["score"] <= 1
    assert {"text", "vector"} <= set(hits[0]["scores"])
    team = [h for h in hits if h["namespace"] == "team"]
    assert team and team[0]["tainted"] is True

    def contents(**kw: object) -> set[str]:
        return {h["content"] for h in client.search_memory(agent_name, "drinks", **kw)}  # type: ignore[arg-type]

    assert contents(metadata={"who": "bob"}) == {"Bob drinks black coffee."}
    assert contents(tags=["ops"]) == {"Release notes go out on Fridays."}
    assert contents(tags_any=["ops", "nothing"]) == {"Release notes go out on Fridays."}
    assert contents(namespaces=["team"]) == {"Team tea is in the kitchen cupboard."}
    assert "Team tea is in the kitchen cupboard." not in contents(namespaces=[None])
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert contents(created_after=tomorrow) == set()
    assert len(contents(created_before=tomorrow.isoformat(), limit=100)) == 4
    # Words only: a word no entry has finds nothing (vectors would find something).
    assert client.search_memory(agent_name, "xylophone", vector_weight=0.0) == []

    bad = _refused(lambda: client.search_memory(agent_name, "tea", limit=0), 422,
                   "invalid_input")
    assert bad.details["errors"][0]["field"] == "body.limit"
    _refused(lambda: client.search_memory(agent_name, "tea", namespaces=["other"]), 403,
             "namespace_not_allowed")
    _refused(lambda: client.search_memory(f"{agent_name}-x", "tea"), 404, "agent_not_found")


def test_refused_writes_write_nothing(client: Client, agent_name: str) -> None:
    client.create_agent(agent_name, model="scripted")
    bad = _refused(lambda: client.add_entries(agent_name, [
        {"content": "kept?"}, {"content": ""}]), 422, "invalid_input")
    assert bad.details["errors"][0]["field"] == "body.entries.1.content"
    _refused(lambda: client.add_entries(agent_name, [{"content": f"n{i}"}
                                                     for i in range(1001)]),
             422, "invalid_input")
    _refused(lambda: client.add_entry(agent_name, "x", namespace="team"), 403,
             "namespace_not_allowed")
    _refused(lambda: client.add_entry(agent_name, "x", tags=["t" * 65]), 422,
             "invalid_input")
    _refused(lambda: client.add_entry(f"{agent_name}-x", "x"), 404, "agent_not_found")
    assert client.list_entries(agent_name)["entries"] == []


def test_export_streams_and_import_takes_every_kind_of_data(
        client: Client, agent_name: str, tmp_path: Path) -> None:
    client.create_agent(agent_name, model="scripted")
    client.put_block(agent_name, "human", "Name: Ann.")
    client.add_entries(agent_name, [{"content": f"fact number {i}", "tags": ["n"]}
                                    for i in range(5)])
    with client.export_memory(agent_name) as lines:
        got = list(lines)
    assert all(line.endswith(b"\n") for line in got)
    rows = [json.loads(line) for line in got]
    assert (rows[0]["type"], rows[0]["agent"]) == ("agentd.memory", agent_name)
    assert [r["value"] for r in rows if r["type"] == "block"] == ["Name: Ann."]
    assert sorted(r["content"] for r in rows if r["type"] == "entry") == [
        f"fact number {i}" for i in range(5)]
    data = b"".join(got)

    # An export left after one line frees its connection: the client goes on working.
    early = client.export_memory(agent_name)
    assert json.loads(next(early))["type"] == "agentd.memory"
    early.close()
    assert len(client.list_entries(agent_name)["entries"]) == 5

    path = tmp_path / "memory.jsonl"
    path.write_bytes(data)
    targets = [f"{agent_name}-{kind}" for kind in ("bytes", "str", "path", "file")]
    for target, source in zip(targets, (data, data.decode(), path, io.BytesIO(data)),
                              strict=True):
        client.create_agent(target, model="scripted")
        assert client.import_memory(target, source) == {
            "blocks": 1, "entries": 5, "duplicates": 0}
        assert client.get_block(target, "human")["value"] == "Name: Ann."
    # Again: every entry is there already, so nothing is written twice.
    assert client.import_memory(targets[0], data)["duplicates"] == 5
    assert len(client.list_entries(targets[0])["entries"]) == 5

    _refused(lambda: client.export_memory(f"{agent_name}-x"), 404, "agent_not_found")
    bad_line = data + b'{"type": "entry", "content": ""}\n'
    client.create_agent(f"{agent_name}-bad", model="scripted")
    bad = _refused(lambda: client.import_memory(f"{agent_name}-bad", bad_line), 422,
                   "invalid_input")
    assert bad.details["errors"][0]["field"] == f"body.line[{len(got) + 1}].content"
    assert client.list_entries(f"{agent_name}-bad")["entries"] == []
    assert client.list_blocks(f"{agent_name}-bad") == []


def test_consolidate_turns_new_history_into_entries_once(client: Client, agent_name: str
                                                         ) -> None:
    client.create_agent(agent_name, model="scripted")
    assert client.consolidate_memory(agent_name) == []
    run = client.send(agent_name, "user:1", "My cat is called Miso.")
    assert run["status"] == "completed", run
    done = client.consolidate_memory(agent_name, "user:1")
    assert [(d["session"], len(d["entries"])) for d in done] == [("user:1", 1)]
    stored = client.get_entry(agent_name, done[0]["entries"][0])
    assert (stored["content"], stored["tags"]) == ("My cat is called Miso.", ["consolidated"])
    # Its source is the consolidation's event in that session.
    assert stored["source"]["seq"] == done[0]["seq"]
    assert stored["source"]["session"]
    assert client.consolidate_memory(agent_name) == []

"""EventBus.subscribe_all (the activity feed's subscription): every session's events
once, in order, bounded, and per-session subscriptions unchanged."""

from __future__ import annotations

import time

import pytest

from agentd.events import AgentChangeKind
from agentd.runtime.bus import EventBus, Feed, Lagged
from agentd.store import EventRecord
from agentd.store.records import AgentChange, AgentRecord


def ev(session: str, seq: int, at: float | None = None) -> EventRecord:
    return EventRecord(session_id=session, seq=seq, kind="message.user",
                       data={"content": f"{session}#{seq}"},
                       at=time.time() if at is None else at)


async def drain(feed: Feed) -> list[EventRecord | Lagged]:
    items: list[EventRecord | Lagged] = []
    while (item := await feed.next(0.01)) is not None:
        items.append(item)
    return items


async def test_a_feed_gets_every_sessions_events_once_in_order() -> None:
    bus = EventBus()
    feed = bus.subscribe_all()
    one = bus.subscribe("s1")
    bus.publish([ev("s1", 1), ev("s2", 1)])
    bus.publish([ev("s1", 2)])
    bus.publish([ev("s1", 2), ev("s2", 1)])  # read back again (another node's commit)
    got = await drain(feed)
    assert [(e.session_id, e.seq) for e in got if isinstance(e, EventRecord)] == [
        ("s1", 1), ("s2", 1), ("s1", 2)]
    # The per-session subscription sees its own session only, as before (follow()
    # drops the repeat).
    mine = [one.queue.get_nowait() for _ in range(one.queue.qsize())]
    assert [(e.session_id, e.seq) for e in mine if isinstance(e, EventRecord)] == [
        ("s1", 1), ("s1", 2), ("s1", 2)]
    feed.close()
    one.close()


async def test_a_slow_feed_is_told_how_many_events_it_missed() -> None:
    bus = EventBus()
    feed = bus.subscribe_all(buffer=3)
    bus.publish([ev("s", n) for n in range(1, 11)])
    got = await drain(feed)
    assert [e.seq for e in got if isinstance(e, EventRecord)] == [1, 2, 3]
    assert [e.dropped for e in got if isinstance(e, Lagged)] == [7]
    # After the report the feed takes events again.
    bus.publish([ev("s", 11)])
    assert [e.seq for e in await drain(feed) if isinstance(e, EventRecord)] == [11]


async def test_a_feed_skips_old_events_read_back_for_a_session_it_never_saw() -> None:
    bus = EventBus()
    feed = bus.subscribe_all()
    bus.publish([ev("s", 1, at=time.time() - 3600), ev("s", 2)])
    assert [e.seq for e in await drain(feed) if isinstance(e, EventRecord)] == [2]


async def test_behind_asks_for_other_nodes_commits_only_while_a_feed_is_open() -> None:
    bus = EventBus()
    assert bus.behind("s", 5) is None  # nobody listens: nothing to read
    feed = bus.subscribe_all()
    assert bus.behind("s", 5) == 0
    bus.publish([ev("s", 5)])
    assert bus.behind("s", 5) is None
    assert bus.behind("s", 7) == 5
    feed.close()
    assert bus.behind("s", 7) is None


async def test_close_all_ends_feeds() -> None:
    bus = EventBus()
    feed = bus.subscribe_all()
    bus.publish([ev("s", 1)])
    bus.close_all()
    assert isinstance(await feed.next(1.0), EventRecord)
    assert await feed.next(1.0) is None
    assert feed.closed
    bus.publish([ev("s", 2)])  # nothing left to offer it to
    assert feed.queue.empty()


def change(name: str, kind: AgentChangeKind) -> AgentChange:
    return AgentChange.of(kind, AgentRecord(id=f"a_{name}", name=name, model="scripted",
                                            settings={"tenant": "acme"}, updated_at=1.0))


async def test_activity_feeds_get_agent_changes_among_events_in_order() -> None:
    bus = EventBus()
    activity, plain = bus.subscribe_activity(), bus.subscribe_all()
    bus.publish([ev("s", 1)])
    bus.publish_agent(change("a", "agent.created"))
    bus.publish([ev("s", 2)])
    bus.publish_agent(change("a", "agent.deleted"))
    got = [await activity.next(0.01) for _ in range(4)]
    assert [(g.kind, g.agent) if isinstance(g, AgentChange) else getattr(g, "seq", g)
            for g in got] == [1, ("agent.created", "a"), 2, ("agent.deleted", "a")]
    # A feed of events only (webhooks, channels) is not given agent changes.
    assert [e.seq for e in await drain(plain) if isinstance(e, EventRecord)] == [1, 2]


def test_an_agent_change_goes_through_a_note_as_it_was() -> None:
    made = AgentChange.of("agent.updated", AgentRecord(
        id="a_1", name="x", model="m", settings={"tenant": "globex"}, state="paused",
        updated_at=5.0), before={"tenant": "acme"})
    assert made.tenants == ("globex", "acme")
    assert AgentChange.from_note(made.to_note("o_1")) == ("o_1", made)
    assert made.to_api() == {"agent": "x", "state": "paused",
                             "updated_at": "1970-01-01T00:00:05Z"}
    for bad in ("", "[]", '["o", "agent.exploded", "x", "a", "s", 1, []]', "{}"):
        with pytest.raises(ValueError):
            AgentChange.from_note(bad)

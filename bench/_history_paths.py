"""bench/history.py's other paths: what else grows with a session than the provider's
messages. Each measures the daemon's CPU per turn (or per call) on a session seeded
with ``length`` turns of history, one client, one request after another:

- ``adapter``: an adapter-backed agent (``adapter:_bench_adapter:echo``, a reply
  function answering ``echo: <message>`` that reads nothing of the history: its own
  work is constant, so what grows is agentd's) through the native message route,
  waited for (``wait``) and streamed (``stream``);
- ``langgraph``: the Agent Protocol door on a thread: ``runs/wait`` (answered with the
  thread's values, every message of it, as LangGraph's API does), ``runs/stream`` with
  ``stream_mode`` ``values`` (the values at the start and the end) and
  ``messages-tuple`` (what RemoteGraph streams for ``messages``), and ``get_state``
  (a call, not a turn: the figure is per call);
- ``openai``: the OpenAI doors continuing a conversation as clients do: Chat
  Completions naming the session with ``X-Agentd-Session`` while resending its whole
  transcript, as a chat client does (``chat_session``, ``chat_session_stream``);
  Responses chained by ``previous_response_id`` with only the new input
  (``responses_previous``, ``responses_previous_stream``); and a stateless client,
  no session named, resending the whole transcript each turn (``chat_stateless``,
  ``responses_stateless``; its agent answers every turn with one scripted text, so
  the transcript grows by a turn's worth per turn whatever the door does with it).
  ``chat_read`` is a call, not a turn: the session-header client's transcript
  ending with the assistant's message, which the door refuses (400) once it has read
  and checked every message: what reading the transcript costs alone.
  The daemon's body and message limits are raised for this path
  (:data:`OPENAI_LIMITS`): 3,000 turns resent are about 1 MB a request.

The scripted model answers (the model is not the point), so the figure is the door's
and the runtime's own work.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from _load import LocalDaemon, info

#: The modes of each path (``--modes`` picks among them; default: all).
MODES: dict[str, tuple[str, ...]] = {
    "adapter": ("wait", "stream"),
    "langgraph": ("wait", "stream_values", "stream_messages", "get_state"),
    "openai": ("chat_session", "chat_session_stream", "responses_previous",
               "responses_previous_stream", "chat_stateless", "responses_stateless",
               "chat_read"),
}
ADAPTER = "adapter:_bench_adapter:echo"
#: The daemon's environment for the adapter path (the bench directory importable).
ADAPTER_ALLOW = '{"allow": ["_bench_adapter:echo"]}'
#: The daemon's limits for the OpenAI path: a client resending 3,000 turns sends about
#: 1 MB per request (over the default 1 MiB body), and a new session gets them as one
#: transcript message (over the default 256 KiB message).
OPENAI_LIMITS = {"AGENTD_MAX_BODY_BYTES": str(16 << 20),
                 "AGENTD_MAX_MESSAGE_BYTES": str(8 << 20)}
#: What the stateless client's agent answers every turn.
FIXED = "Noted: the figures match the previous report and nothing else changed."

#: A seeded turn of these paths: a question and an answer of about a chat's size (the
#: provider path seeds shorter ones, to fit a 200k window; the doors' cost grows with
#: the bytes of the conversation, so these paths keep turns of a real chat's length).
USER = ("Could you look at item {i} again and tell me what changed since the last time "
        "we talked about it, briefly?")
ANSWER = ("stub: Item {i} is as it was: the figures match the previous report, the open "
          "question is still the date, and nothing else changed since we last spoke.")


def seed(api: httpx.Client, agent: str, turns: int, user: str = USER,
         answer: str = ANSWER) -> str:
    """A new session of ``turns`` turns of history (each a user message and the agent's
    answer, from the templates ``user`` and ``answer``, added through the Agent
    Protocol door's ``update_state``: nothing is run): its key."""
    created = api.post("/langgraph/threads", json={"graph_id": agent})
    created.raise_for_status()
    thread = created.json()["thread_id"]
    messages = [m for i in range(turns) for m in (
        {"type": "human", "content": user.format(i=i)},
        {"type": "ai", "content": answer.format(i=i)})]
    for start in range(0, len(messages), 1000):
        reply = api.post(f"/langgraph/threads/{quote(thread, safe='')}/state",
                         json={"values": {"messages": messages[start:start + 1000]}},
                         timeout=120)
        if reply.status_code != 200:
            raise RuntimeError(f"seeding {thread}: {reply.status_code} {reply.text[:300]}")
    return f"lg:{thread}"


def create_agents(api: httpx.Client, paths: list[str]) -> None:
    off = {"memory": {"compaction": {"auto": False}, "auto_recall": False}}
    agents: list[dict[str, Any]] = []
    if "adapter" in paths:
        agents.append({"name": "h-adapter", "model": ADAPTER})
    if "langgraph" in paths:
        agents.append({"name": "h-langgraph", "model": "scripted", "settings": off})
    if "openai" in paths:
        agents += [{"name": "h-openai", "model": "scripted", "settings": off},
                   {"name": "h-openai-fixed", "model": "scripted",
                    "settings": {**off, "script": [{"text": FIXED}]}}]
    for body in agents:
        created = api.post("/v1/agents", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"creating {body['name']}: {created.text[:300]}")


def _sse(reply: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) of each frame of an SSE answer."""
    event, data = "", []
    for line in reply.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event, "\n".join(data)


def _check(ok: bool, what: str, got: Any) -> None:
    if not ok:
        raise RuntimeError(f"{what}: {str(got)[:300]}")


def _phase(daemon: LocalDaemon, turns: int, one: Callable[[int], None]) -> float:
    before = daemon.server.cpu_s()
    for i in range(turns):
        one(i)
    after = daemon.server.cpu_s()
    assert before is not None and after is not None
    return round((after - before) * 1000 / turns, 3)


# -- adapter -------------------------------------------------------------------------


def _native_turn(api: httpx.Client, agent: str, key: str, content: str, stream: bool,
                 expect: str) -> None:
    path = f"/v1/agents/{agent}/sessions/{quote(key, safe='')}/messages"
    if not stream:
        reply = api.post(path, json={"content": content, "wait": True}, timeout=120)
        reply.raise_for_status()
        run = reply.json()
        output = (run.get("run") or run).get("output")
        _check(output == expect, "unexpected answer", run)
        return
    with api.stream("POST", path, json={"content": content, "stream": True},
                    headers={"Accept": "text/event-stream"}, timeout=120) as reply:
        reply.raise_for_status()
        for event, data in _sse(reply):
            if event == "run.failed":
                raise RuntimeError(f"run failed: {data[:300]}")
            if event in ("run.completed", "done"):
                return
    raise RuntimeError("the stream ended before the run did")


def _adapter(daemon: LocalDaemon, api: httpx.Client, length: int, turns: int, mode: str
             ) -> float:
    agent = "h-adapter"
    key = seed(api, agent, length)
    _native_turn(api, agent, key, "warm up", False, "echo: warm up")

    def one(i: int) -> None:
        content = f"{mode} turn {i} of {length}"
        _native_turn(api, agent, key, content, mode == "stream", f"echo: {content}")

    return _phase(daemon, turns, one)


# -- langgraph -----------------------------------------------------------------------


def _lg_body(content: str, stream_mode: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"assistant_id": "h-langgraph",
                            "input": {"messages": [{"role": "user", "content": content}]}}
    if stream_mode is not None:
        body["stream_mode"] = stream_mode
    return body


def _values_check(values: Any, content: str, count: int) -> None:
    messages = values.get("messages") if isinstance(values, dict) else None
    _check(isinstance(messages, list) and len(messages) == count
           and messages[-1].get("content") == f"echo: {content}",
           f"the thread's values are not its {count} messages ending in the answer",
           str(values)[-300:])


def _langgraph(daemon: LocalDaemon, api: httpx.Client, length: int, turns: int,
               mode: str) -> float:
    key = seed(api, "h-langgraph", length)
    thread = quote(key.removeprefix("lg:"), safe="")
    base = f"/langgraph/threads/{thread}"
    warm = api.post(f"{base}/runs/wait", json=_lg_body("warm up"), timeout=120)
    warm.raise_for_status()
    count = 2 * length + 2
    _values_check(warm.json(), "warm up", count)

    def one(i: int) -> None:
        nonlocal count
        content = f"{mode} turn {i} of {length}"
        if mode == "get_state":
            reply = api.get(f"{base}/state", timeout=120)
            reply.raise_for_status()
            _values_check(reply.json()["values"], "warm up", count)
            return
        count += 2
        if mode == "wait":
            reply = api.post(f"{base}/runs/wait", json=_lg_body(content), timeout=120)
            reply.raise_for_status()
            _values_check(reply.json(), content, count)
            return
        stream_mode = "values" if mode == "stream_values" else "messages-tuple"
        last: Any = None
        with api.stream("POST", f"{base}/runs/stream", json=_lg_body(content, stream_mode),
                        timeout=120) as reply:
            reply.raise_for_status()
            for event, data in _sse(reply):
                if event == "error":
                    raise RuntimeError(f"run failed: {data[:300]}")
                if event in ("values", "messages"):
                    last = orjson.loads(data)
                if event == "end":
                    break
            else:
                raise RuntimeError("the stream ended before the run did")
        if stream_mode == "values":
            _values_check(last, content, count)
        else:
            _check(isinstance(last, list) and last[0].get("content") == f"echo: {content}",
                   "unexpected messages frame", last)

    return _phase(daemon, turns, one)


# -- openai --------------------------------------------------------------------------


def _transcript(length: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for i in range(length):
        out += [{"role": "user", "content": USER.format(i=i)},
                {"role": "assistant", "content": ANSWER.format(i=i)}]
    return out


def _chat(api: httpx.Client, agent: str, messages: list[dict[str, str]], stream: bool,
          headers: dict[str, str]) -> str:
    body = {"model": agent, "messages": messages, "stream": stream}
    if not stream:
        reply = api.post("/v1/chat/completions", json=body, headers=headers, timeout=120)
        _check(reply.status_code == 200, "chat completion failed", reply.text)
        return str(reply.json()["choices"][0]["message"]["content"])
    parts: list[str] = []
    with api.stream("POST", "/v1/chat/completions", json=body, headers=headers,
                    timeout=120) as reply:
        _check(reply.status_code == 200, "chat completion failed", reply.status_code)
        for _, data in _sse(reply):
            if data == "[DONE]":
                return "".join(parts)
            chunk = orjson.loads(data)
            _check("error" not in chunk, "error chunk", chunk)
            for choice in chunk.get("choices") or ():
                parts.append((choice.get("delta") or {}).get("content") or "")
    raise RuntimeError("the stream ended before [DONE]")


def _responses(api: httpx.Client, agent: str, items: str | list[dict[str, str]],
               previous: str | None, stream: bool, headers: dict[str, str]
               ) -> tuple[str, str]:
    """(the response's id, its text)."""
    body: dict[str, Any] = {"model": agent, "input": items, "stream": stream}
    if previous is not None:
        body["previous_response_id"] = previous
    final: dict[str, Any] | None = None
    if not stream:
        reply = api.post("/v1/responses", json=body, headers=headers, timeout=120)
        _check(reply.status_code == 200, "response failed", reply.text)
        final = reply.json()
    else:
        with api.stream("POST", "/v1/responses", json=body, headers=headers,
                        timeout=120) as reply:
            _check(reply.status_code == 200, "response failed", reply.status_code)
            for event, data in _sse(reply):
                if event in ("response.completed", "response.failed",
                             "response.incomplete"):
                    final = orjson.loads(data)["response"]
                    break
    _check(final is not None and final.get("status") == "completed",
           "the response did not complete", final)
    assert final is not None
    text = "".join(part.get("text", "") for item in final["output"]
                   if item.get("type") == "message" for part in item["content"])
    return str(final["id"]), text


def _openai(daemon: LocalDaemon, api: httpx.Client, length: int, turns: int, mode: str
            ) -> float:
    stream = mode.endswith("_stream")
    if mode.endswith("_stateless"):
        # No session named: the client's transcript is the conversation.
        agent = "h-openai-fixed"
        transcript = _transcript(length)
        # (A conversation of its own: the door may not take it for another one.)
        transcript[0] = {"role": "user", "content": f"{mode} {secrets.token_hex(4)}"}

        def ask(content: str) -> None:
            transcript.append({"role": "user", "content": content})
            if mode == "chat_stateless":
                text = _chat(api, agent, transcript, False, {})
            else:
                text = _responses(api, agent, transcript, None, False, {})[1]
            _check(text == FIXED, "unexpected answer", text)
            transcript.append({"role": "assistant", "content": text})

        ask("warm up")
        return _phase(daemon, turns, lambda i: ask(f"{mode} turn {i} of {length}"))
    agent = "h-openai"
    key = seed(api, agent, length)
    header = {"X-Agentd-Session": key}
    if mode == "chat_read":
        raw = orjson.dumps({"model": agent, "messages": _transcript(length)})

        def read(i: int) -> None:
            reply = api.post("/v1/chat/completions", content=raw, timeout=120,
                             headers={**header, "Content-Type": "application/json"})
            _check(reply.status_code == 400 and reply.json()["error"]["param"] ==
                   "messages", "not refused for its last message", reply.text)

        read(-1)
        return _phase(daemon, turns, read)
    if mode.startswith("chat_"):
        transcript = _transcript(length)

        def say(content: str) -> None:
            transcript.append({"role": "user", "content": content})
            text = _chat(api, agent, transcript, stream, header)
            _check(text == f"echo: {content}", "unexpected answer", text)
            transcript.append({"role": "assistant", "content": text})

        say("warm up")
        return _phase(daemon, turns, lambda i: say(f"{mode} turn {i} of {length}"))
    previous, text = _responses(api, agent, "warm up", None, False, header)
    _check(text == "echo: warm up", "unexpected answer", text)

    def chain(i: int) -> None:
        nonlocal previous
        content = f"{mode} turn {i} of {length}"
        previous, text = _responses(api, agent, content, previous, stream, {})
        _check(text == f"echo: {content}", "unexpected answer", text)

    return _phase(daemon, turns, chain)


def measure(daemon: LocalDaemon, api: httpx.Client, path: str, length: int, turns: int,
            modes: list[str], errors: list[str]) -> dict[str, float | None]:
    """CPU ms per turn (per call for ``get_state``) of each mode of ``path``; None for
    a mode that failed (why: appended to ``errors``)."""
    out: dict[str, float | None] = {}
    for mode in modes:
        try:
            if path == "adapter":
                out[mode] = _adapter(daemon, api, length, turns, mode)
            elif path == "langgraph":
                out[mode] = _langgraph(daemon, api, length, turns, mode)
            else:
                out[mode] = _openai(daemon, api, length, turns, mode)
        except (RuntimeError, httpx.HTTPError) as exc:
            out[mode] = None
            errors.append(f"{path} {mode} at {length} turns: {exc}"[:500])
            info(errors[-1])
            continue
        info(f"{path} {mode} at {length} turns: {out[mode]} ms of daemon CPU per "
             f"{'call' if mode in ('get_state', 'chat_read') else 'turn'}")
    return out

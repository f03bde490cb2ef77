"""What each call of the isolation property must answer, computed from the world.

For a call (an operation, a caller, a target):

- a viewer's write: 403 ``forbidden`` (whatever the target);
- a target the caller may not use (or that does not exist): exactly what the same
  caller gets for a ghost target (status, code, message, the two values made the same);
- a caller below the operation's role (or scoped, where it needs every agent): 403;
- else allowed: a read answers what the admin's answers, a write does not answer as
  for a missing target, a list holds exactly the admin's items the caller may get, a
  daemon-wide read names nothing the caller may not get.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace
from typing import Any, overload

import httpx
import orjson
from tests.isolation._ops import FIXED, Op, fill, ghost_of
from tests.isolation._world import THREAD, Built, Caller

__all__ = ["Call", "Checker", "calls_of", "verdict"]

_OWNED_GET = {"run_id": "/v1/runs/{}", "checkpoint_id": "/v1/checkpoints/{}",
              "schedule_id": "/v1/schedules/{}", "webhook_id": "/v1/webhooks/{}",
              "delivery_id": "/v1/webhook-deliveries/{}", "approval_id": "/v1/approvals/{}",
              "fork_id": "/v1/forks/{}", "suite_id": "/v1/evals/suites/{}",
              "eval_run_id": "/v1/evals/runs/{}"}


@dataclass(frozen=True)
class Call:
    op: Op
    caller: Caller
    #: The target's value (an agent's name, an id, a tenant, a token; "" for none),
    #: the agent that owns it (for ids), and a ghost of the same kind.
    target: str
    owner: str | None
    ghost: str

    def describe(self) -> str:
        return (f"{self.op.key} by {self.caller.label} ({self.caller.role}, tenants "
                f"{self.caller.tenants}, agents {self.caller.agents}) on "
                f"{self.op.target}={self.target!r} (of {self.owner!r})")


def _within(inner: dict[str, Any], outer: Caller) -> bool:
    """Whether a token (as the admin lists it) reaches only what ``outer`` reaches."""
    if outer.everything:
        return True
    if outer.tenants is not None and (inner.get("tenant") is None or not any(
            fnmatch.fnmatchcase(inner["tenant"], p) for p in outer.tenants)):
        return False
    if outer.agents is not None:
        wanted = inner.get("agents")
        if wanted is None:
            return False
        return all(p in outer.agents or (not any(c in p for c in "*?[") and any(
            fnmatch.fnmatchcase(p, q) for q in outer.agents)) for p in wanted)
    return True


def may_see_token(caller: Caller, token: dict[str, Any]) -> bool:
    """Whether ``GET /v1/tokens`` shows ``caller`` the token (docs/security.md)."""
    if (caller.role == "admin" and caller.everything) or token["name"] == caller.label:
        return True
    if token.get("source") != "api":
        return False
    if token.get("created_by") == caller.label:
        return True
    return (caller.role != "viewer" and ROLE_RANK[token["role"]] <= caller.rank()
            and _within(token, caller))


ROLE_RANK = {"viewer": 0, "member": 1, "operator": 2, "admin": 3}


def verdict(call: Call, built: Built, tokens: list[dict[str, Any]]) -> str:
    """``viewer``, ``hidden``, ``role`` or ``allowed`` (see the module)."""
    op, caller = call.op, call.caller
    if op.write and caller.role == "viewer":
        return "viewer"
    if op.expect == "create" and call.target not in built.agents:
        return "allowed"  # (a new name: creating it is a write like any other)
    if op.target is not None and not _reaches(call, built, tokens):
        return "hidden"
    if caller.rank() < ROLE_RANK[op.right] or (op.unscoped and not caller.everything):
        return "role"
    return "allowed"


def _reaches(call: Call, built: Built, tokens: list[dict[str, Any]]) -> bool:
    target, caller = call.op.target, call.caller
    if target == "tenant":
        return call.target in built.spec.tenants and caller.sees_tenant(
            call.target)
    if target == "token":
        found = [t for t in tokens if t["name"] == call.target]
        return bool(found) and may_see_token(caller, found[0])
    agent = call.target if target == "name" else call.owner
    return agent is not None and agent in built.agents and caller.may(
        agent, built.agents[agent])


def _dig(value: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        if isinstance(value, str):
            value = orjson.loads(value)
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def body(response: httpx.Response) -> Any:
    """The JSON of an answer (of its first event, for an SSE answer: MCP's)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data: "):
                return orjson.loads(line[6:])
    return response.json()


#: Fields an answer makes up as it is sent (two reads of the same state differ there).
_VOLATILE = re.compile(r'"(exported_at)":"[^"]*"')


def normalised(response: httpx.Response, *values: str, whole: bool = False
               ) -> tuple[int, str]:
    """Status and text, with each of ``values`` as ``<X>`` (``whole``: only where it
    stands alone, not as a part of a longer name: a tenant ``t0`` in ``t0.bot1``)."""
    text = _VOLATILE.sub(r'"\1":"<now>"', response.text)
    for value in sorted(values, key=len, reverse=True):
        text = (re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w.-])", "<X>", text)
                if whole else text.replace(value, "<X>"))
    return response.status_code, text


class Checker:
    """Makes the calls of one world and checks their answers."""

    def __init__(self, api: httpx.AsyncClient, built: Built) -> None:
        self.api = api
        self.built = built
        self.failures: list[str] = []
        self.tokens: list[dict[str, Any]] = []
        #: How many calls got each verdict (the test checks each kind came up).
        self.seen: dict[str, int] = {}

    # -- calls ----------------------------------------------------------------------

    def values(self, call: Call, value: str) -> dict[str, str]:
        """Every parameter of ``call`` with ``value`` as its target."""
        op = call.op
        out = {**FIXED, "caller": call.caller.label, "name": "calculator"}
        if op.target is None:
            return out
        agent = value if op.target == "name" else call.owner
        seeded = self.built.seeded.get(agent or "") or next(iter(self.built.seeded.values()))
        out.update(seeded.ids)
        out["name"] = agent if agent is not None else seeded.name
        out[op.target] = value
        if op.target in ("tenant", "token"):
            out["name"] = value
        return out

    async def send(self, call: Call, value: str, caller: Caller | None = None
                   ) -> httpx.Response:
        op = call.op
        values = self.values(call, value)
        who = caller or call.caller
        headers = {"Authorization": f"Bearer {who.text}", **op.headers}
        kwargs: dict[str, Any] = {"headers": headers,
                                  "params": fill(dict(op.query), values)}
        if op.body is not None or op.method in ("POST", "PUT", "PATCH"):
            kwargs["content"] = orjson.dumps(fill(op.body if op.body is not None else {},
                                                  values))
            headers.setdefault("Content-Type", "application/json")
        return await self.api.request(op.method, fill(op.path, values), **kwargs)

    async def refresh(self) -> None:
        """The world as the admin reads it now (after an allowed write)."""
        admin = {"Authorization": f"Bearer {self.built.admin.text}"}
        agents = (await self.api.get("/v1/agents", headers=admin,
                                     params={"limit": "200"})).json()["agents"]
        self.built.agents = {a["name"]: a["settings"].get("tenant") for a in agents}
        self.tokens = (await self.api.get("/v1/tokens", headers=admin)).json()["tokens"]

    async def exists(self, call: Call) -> bool:
        """Whether the target is there now (the admin asks)."""
        op = call.op
        if op.target in (None, "name", "tenant", "token"):
            return True  # (decided with the world: ``refresh``)
        admin = {"Authorization": f"Bearer {self.built.admin.text}"}
        path = _OWNED_GET[op.target].format(call.target)
        return (await self.api.get(path, headers=admin)).status_code == 200

    # -- checks ---------------------------------------------------------------------

    def fail(self, call: Call, why: str, *answers: httpx.Response) -> None:
        shown = " | ".join(f"{a.status_code} {a.text[:300]}" for a in answers)
        self.failures.append(f"{call.describe()}: {why}: {shown}")

    async def check(self, call: Call) -> None:
        found = verdict(call, self.built, self.tokens)
        self.seen[found] = self.seen.get(found, 0) + 1
        if found == "allowed" and not await self.exists(call):
            found = "hidden"  # (gone since: as for a ghost)
        if found == "viewer" or found == "role":
            out = await self.send(call, call.target)
            if out.status_code != 403:
                self.fail(call, f"expected 403 ({found})", out)
            return
        if found == "hidden":
            await self._hidden(call)
            return
        await self._allowed(call)

    async def _hidden(self, call: Call) -> None:
        out = await self.send(call, call.target)
        if call.op.expect == "create":
            # A name taken elsewhere must not be confirmed (what a ghost gets is a new
            # agent: not comparable). Not held for the configuration's scoped tokens:
            # their agents' names are free, so a taken one answers 409 (docs/
            # security.md 1b, "Does not stop"; named tokens bound to a tenant name
            # theirs `<tenant>.<name>`).
            if out.status_code == 409 and call.caller.source != "config":
                self.fail(call, "an agent the caller may not use is confirmed", out)
            return
        none = await self.send(call, call.ghost)
        whole = call.op.target in ("tenant", "token")
        if normalised(out, call.target, whole=whole) != normalised(none, call.ghost,
                                                                   whole=whole):
            self.fail(call, f"answers unlike a missing one ({call.ghost!r})", out, none)

    async def _allowed(self, call: Call) -> None:
        op = call.op
        if op.expect == "same":
            out = await self.send(call, call.target)
            admin = await self.send(call, call.target, self.built.admin)
            if normalised(out) != normalised(admin):
                self.fail(call, "an allowed read differs from the admin's", out, admin)
            return
        if op.expect == "visible":
            out = await self.send(call, call.target)
            if op.target == "token" and out.status_code < 300:
                self._retoken(call.target, out)
            if op.target is None:
                if out.status_code >= 300:
                    self.fail(call, "an allowed write failed", out)
                return
            none = await self.send(call, call.ghost)
            # (a 4xx that a missing target gets as well, but a 404, is about the
            # request, not the target: a name the door cannot take, say)
            if out.status_code >= 500 or (out.status_code == 404 and normalised(
                    out, call.target) == normalised(none, call.ghost)):
                self.fail(call, "an allowed write answers as for a missing target", out,
                          none)
            return
        if op.expect == "create":
            out = await self.send(call, call.target)
            if out.status_code not in (201, 403, 409, 422):
                self.fail(call, "creating answered", out)
            return
        if op.expect == "list":
            await self._list(call)
            return
        await self._daemon(call)

    def _retoken(self, name: str, answer: httpx.Response) -> None:
        """A token rotated (its new text) or revoked (no longer a caller)."""
        callers = self.built.callers
        index = next(i for i, c in enumerate(callers) if c.label == name)
        if answer.status_code == 204:
            del callers[index]
        else:
            callers[index] = replace(callers[index], text=answer.json()["token"])

    async def _list(self, call: Call) -> None:
        op, caller = call.op, call.caller
        assert op.items is not None
        key, field = op.items
        count = key == "#"
        listing = op
        if count:  # a count is the length of the matching search
            listing = Op(op.door, op.method, op.path.replace("count", "search"), None,
                         body={"limit": 100}, headers=op.headers)
            key = ""
        search = Call(listing, caller, "", None, "")
        out = await self.send(call, "")
        mine = await self.send(search, "") if count else out
        theirs = await self.send(search, "", self.built.admin)
        if out.status_code != 200 or theirs.status_code != 200:
            self.fail(call, "a list failed", out, theirs)
            return
        items = _dig(body(mine), key)
        wanted = [i for i in _dig(body(theirs), key) if self._may_get(op, caller, i, field)]
        got = body(out) if count else items
        if got != (len(wanted) if count else wanted):
            self.fail(call, f"a list holds other than what the caller may get: expected "
                            f"{[_dig(i, field) for i in wanted]}", out)

    def _may_get(self, op: Op, caller: Caller, item: Any, field: str) -> bool:
        if op.path == "/v1/tenants":
            return caller.sees_tenant(item["name"])
        if op.path == "/v1/tokens":
            return may_see_token(caller, item)
        agent = _dig(item, field)
        tenant = item.get("tenant", self.built.agents.get(agent)) if isinstance(
            item, dict) and "tenant" in item else self.built.agents.get(agent)
        return bool(agent) and (agent in self.built.agents or "tenant" in item) and (
            caller.may(agent, tenant))

    def hidden_words(self, caller: Caller) -> list[str]:
        """What a daemon-wide answer must not name to ``caller``: the agents it may not
        use, their objects' ids and threads, and tenants it neither sees nor has an
        agent in."""
        words: list[str] = []
        shown_tenants = {t for a, t in self.built.agents.items() if caller.may(a, t)}
        for name, tenant in self.built.agents.items():
            if not caller.may(name, tenant):
                seeded = self.built.seeded.get(name)
                words += [name, f"{name}:{THREAD}", *(seeded.values() if seeded else ())]
        words += [t for t in self.built.spec.tenants
                  if not caller.sees_tenant(t) and t not in shown_tenants]
        # A refusal may describe the caller's own scope ("its scope is agents t0.*,
        # by02 ..."): a pattern of its own that is a hidden agent's exact name tells it
        # nothing it did not send.
        return [w for w in words if w not in (caller.agents or ())]

    async def _daemon(self, call: Call) -> None:
        out = await self.send(call, "")
        if out.status_code >= 500:
            self.fail(call, "a daemon-wide read failed", out)
            return
        leaked = [w for w in self.hidden_words(call.caller)
                  if re.search(rf"(?<![\w.:-]){re.escape(w)}(?![\w.:-])", out.text)]
        if leaked:
            self.fail(call, f"a daemon-wide read names {leaked}", out)
        if call.op.path == "/v1/overview" and out.status_code == 200:
            visible = [a for a, t in self.built.agents.items() if call.caller.may(a, t)]
            if out.json()["agents"]["total"] != len(visible):
                self.fail(call, f"the overview counts other than {len(visible)} agents",
                          out)


def calls_of(ops: list[Op], picks: list[tuple[int, int]], built: Built,
             tokens: list[dict[str, Any]]) -> list[Call]:
    """The calls of one world: for each operation, its drawn caller on its drawn
    target and, when that caller may not use every target of the kind, on one it may
    not use too (every caller, for :attr:`Op.every_caller`); each operation's place
    shifts the draws, so that a world whose draws all shrank to 0 still calls with
    every token."""
    calls = []
    for n, (op, (c, t)) in enumerate(zip(ops, picks, strict=False)):
        caller = built.callers[(c + n) % len(built.callers)]
        first = resolve(op, caller, built, tokens, t + n)
        calls.append(first)
        if op.right != "viewer":  # (every token, on the drawn target)
            calls += [resolve(op, other, built, tokens, t + n) for other in built.callers
                      if other is not caller]
        if op.target is None:
            continue
        reached = _reaches(first, built, tokens)
        for other in built.callers if op.every_caller else [caller] * reached:
            hidden = resolve(op, other, built, tokens, t + n, hidden=True)
            if hidden is not None:
                calls.append(hidden)
    return calls


@overload
def resolve(op: Op, caller: Caller, built: Built, tokens: list[dict[str, Any]],
            drawn: int) -> Call: ...
@overload
def resolve(op: Op, caller: Caller, built: Built, tokens: list[dict[str, Any]],
            drawn: int, hidden: bool) -> Call | None: ...
def resolve(op: Op, caller: Caller, built: Built, tokens: list[dict[str, Any]],
            drawn: int, hidden: bool = False) -> Call | None:
    """The call of ``op`` by ``caller`` on the ``drawn``-th target of its kind (the
    last of each kind is a ghost); ``hidden``: on the ``drawn``-th of those that exist
    and ``caller`` may not use (None: there is none)."""
    if op.target is None:
        return Call(op, caller, "", None, "")
    if op.target == "name":
        names = sorted(built.seeded)
        choices: list[tuple[str, str | None]] = [(n, n) for n in names] + [("", None)]
    elif op.target == "tenant":
        # (not ``default``: listed, but not a tenant the API changes or deletes)
        choices = [(t, None) for t in (*built.spec.tenants, "")]
    elif op.target == "token":
        choices = [(t["name"], None) for t in tokens if t.get("source") == "api"]
        choices.append(("", None))
    else:
        choices = [(s.ids[op.target], n) for n, s in sorted(built.seeded.items())]
        choices.append(("", None))
    if hidden:
        choices = [(v, o) for v, o in choices if v and not _reaches(
            Call(op, caller, v, o, ""), built, tokens)]
        if not choices:
            return None
    value, owner = choices[drawn % len(choices)]
    missing = value == ""
    if missing:  # the target is a ghost itself: a name with a tenant's prefix or none
        tenants = built.spec.tenants
        value = ghost_of(op.target, drawn, "" if drawn % 2 else
                         f"{tenants[drawn % len(tenants)]}.x")
    # What it is compared with: a ghost of the same shape (another, for a ghost) that
    # the caller's name patterns take or leave as they do the target (a name they
    # take reaches the route, whose own checks come next, whether it exists or not).
    ghost = ghost_of(op.target, drawn + missing, value)
    if op.target == "name":
        def named(name: str) -> bool:
            return caller.agents is None or any(
                fnmatch.fnmatchcase(name, p) for p in caller.agents)

        ghost = next((g for g in (ghost, value + "2", value + "-ghost", "nobody",
                                  "zz-nobody") if g != value and g not in built.agents
                      and named(g) == named(value)), ghost)  # (else: an exact name)
    if ghost == value:
        ghost += "2"
    return Call(op, caller, value, owner, ghost)


__all__ += ["may_see_token", "normalised", "resolve"]

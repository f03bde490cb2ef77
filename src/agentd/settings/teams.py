"""The ``team`` area of an agent's settings: a declarative multi-agent pattern.

An agent whose ``settings.team`` is set is a team: its runs call no model of their
own; each is driven by :mod:`agentd.autonomy.teams` through its members, every member
invocation a child run (a call) linked to the team's run. Unset (the default): an
ordinary agent. The patterns:

=============  ==============================================================
``pipeline``   ``members`` in order, each given the previous one's reply; the
               last reply is the run's.
``parallel``   every member given the message at once; their replies joined by
               the ``join`` member (given them labelled by member) or, without
               one, labelled and concatenated.
``router``     the ``router`` agent names the member to answer (its reply must
               be one member's name; otherwise ``default``, else the run fails);
               the message is handed off to that member.
``loop``       the ``generator`` drafts, the ``critic`` reviews; until the
               critic's reply contains ``exit_token`` or ``max_rounds`` passed,
               the critic's feedback goes back to the generator.
=============  ==============================================================

What this model checks is the shape (which fields each pattern needs, no duplicate
members, no agent in two roles it cannot have). That the agents exist, share the
team's tenant, accept calls from it, and that no team contains itself through other
teams, is checked when the agent is saved (:func:`agentd.autonomy.teams.check_team`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["MAX_MEMBERS", "MAX_ROUNDS", "TeamSettings"]

#: Members one team may have at most.
MAX_MEMBERS = 16
#: Generator-and-critic rounds one loop may run at most.
MAX_ROUNDS = 20
#: An agent's name (as ``check_agent_name`` accepts it).
_AGENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

AgentName = Annotated[str, StringConstraints(pattern=_AGENT_NAME)]
Pattern = Literal["pipeline", "parallel", "router", "loop"]

#: The fields each pattern needs, and those it does not take.
_NEEDS: dict[str, tuple[str, ...]] = {
    "pipeline": ("members",), "parallel": ("members",), "router": ("members", "router"),
    "loop": ("generator", "critic")}
_TAKES: dict[str, frozenset[str]] = {
    "pipeline": frozenset({"members"}),
    "parallel": frozenset({"members", "join"}),
    "router": frozenset({"members", "router", "default"}),
    "loop": frozenset({"generator", "critic", "exit_token", "max_rounds",
                       "on_max_rounds"})}
_ROLES = ("members", "join", "router", "default", "generator", "critic", "exit_token",
          "max_rounds", "on_max_rounds")


class TeamSettings(BaseModel):
    """A team: its pattern and the agents that play it (``settings.team``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: Pattern = Field(description="`pipeline`, `parallel`, `router` or `loop`.")
    members: list[AgentName] = Field(
        default_factory=list, max_length=MAX_MEMBERS,
        description="The agents of a pipeline (in order), a parallel fan-out, or a "
                    "router's choices.")
    join: AgentName | None = Field(
        None, description="parallel: the agent that gets every member's reply, "
                          "labelled, and answers (default: the replies concatenated).")
    router: AgentName | None = Field(
        None, description="router: the agent asked which member should answer (its "
                          "reply must be one member's name).")
    default: AgentName | None = Field(
        None, description="router: the member that answers when the router's reply "
                          "names none (default: the run fails, `team_route`).")
    generator: AgentName | None = Field(None, description="loop: the agent that drafts.")
    critic: AgentName | None = Field(None, description="loop: the agent that reviews.")
    exit_token: str = Field("APPROVED", min_length=1, max_length=100,
                            description="loop: the critic's reply containing this ends "
                                        "the loop (case-sensitive).")
    max_rounds: int = Field(3, ge=1, le=MAX_ROUNDS,
                            description="loop: generator-and-critic rounds at most.")
    on_max_rounds: Literal["complete", "fail"] = Field(
        "complete", description="loop: after max_rounds without the exit token, "
                                "complete with the last draft or fail (`team_rounds`).")
    step_timeout_s: float = Field(
        3600.0, ge=1, le=86_400, allow_inf_nan=False,
        description="How long one step's member run may take before the team run fails "
                    "(`team_step_timeout`; its children are cancelled).")
    max_input_chars: int = Field(
        64_000, ge=1, le=1_000_000,
        description="The longest message one member is sent (a longer reply passed on "
                    "is cut, saying so).")

    @model_validator(mode="after")
    def _shape(self) -> TeamSettings:
        for name in _NEEDS[self.pattern]:
            if not getattr(self, name):
                raise ValueError(f"a {self.pattern} team needs {name!r}")
        given = {name for name in _ROLES
                 if name in self.model_fields_set and name not in _TAKES[self.pattern]}
        if given:
            raise ValueError(f"a {self.pattern} team does not take "
                             f"{', '.join(sorted(given))}")
        if self.pattern != "pipeline" and len(set(self.members)) != len(self.members):
            # (A pipeline may pass through one agent twice: its steps are by position.)
            raise ValueError("members names an agent twice")
        if self.pattern in ("pipeline", "parallel") and len(self.members) < 1:
            raise ValueError(f"a {self.pattern} team needs at least one member")
        if self.default is not None and self.default not in self.members:
            raise ValueError(f"default {self.default!r} is not one of the members")
        return self

    def agents(self) -> list[str]:
        """Every agent the team runs, each once, in the order they first appear."""
        named = [*self.members, self.join, self.router, self.generator, self.critic]
        return list(dict.fromkeys(n for n in named if n is not None))

    def max_steps(self) -> int:
        """The most child runs one run of the team starts."""
        if self.pattern == "pipeline":
            return len(self.members)
        if self.pattern == "parallel":
            return len(self.members) + (1 if self.join else 0)
        if self.pattern == "router":
            return 2
        return 2 * self.max_rounds

    def max_concurrent(self) -> int:
        """The most child runs one run of the team has under way at once."""
        return len(self.members) if self.pattern == "parallel" else 1

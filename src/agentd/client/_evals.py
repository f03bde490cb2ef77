"""Forks and evaluations: ``POST /v1/runs/{id}/fork``, ``/v1/forks``, ``/v1/evals``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
import orjson

from agentd.client._errors import APIError, ClientError
from agentd.client._memory import MemoryExport, open_lines
from agentd.client.base import BaseClient, segment

__all__ = ["EvalsAPI"]

#: Cases the daemon takes in one import request.
_IMPORT_CHUNK = 1000
#: The bytes of cases (as JSON) sent in one request at most, unless one case alone is
#: larger (the daemon takes a body of its ``max_body_bytes`` plus one case at
#: ``[evals] max_case_bytes`` on this route).
_IMPORT_BYTES = 768 * 1024


def _candidate(model: str | None, instructions: str | None,
               settings: Mapping[str, Any] | None, tools: str) -> dict[str, Any]:
    body: dict[str, Any] = {"tools": tools}
    for key, value in (("model", model), ("instructions", instructions),
                       ("settings", settings)):
        if value is not None:
            body[key] = dict(value) if isinstance(value, Mapping) else value
    return body


class EvalsAPI(BaseClient):
    """Forking runs onto another configuration; eval suites, their cases and runs."""

    # -- forks -------------------------------------------------------------------------

    def fork_run(self, run_id: str, *, from_step: int = 1, model: str | None = None,
                 instructions: str | None = None,
                 settings: Mapping[str, Any] | None = None, tools: str = "recorded",
                 priority: str | None = None, wait: bool = True) -> dict[str, Any]:
        """Fork a finished run onto another configuration from one of its steps: the
        steps before ``from_step`` come from its log, from there the candidate runs for
        real (``tools``: ``recorded``, answered from the original's same calls, or
        ``live``, in a copy of the workspace at the step).

        Returns:
            The divergence report: ``{fork_id, run_id, session, status, from_step,
            model, tools, original, fork, first_divergence, tool_calls_added,
            tool_calls_removed, unrecorded_calls, same_output}`` (as it stands, when
            not ``wait``: :meth:`get_fork` later).
        """
        body = {"from_step": from_step, "wait": wait,
                **_candidate(model, instructions, settings, tools)}
        if priority is not None:
            body["priority"] = priority
        result: dict[str, Any] = self._request(
            "POST", f"/v1/runs/{segment(run_id)}/fork", json_body=body)
        return result

    def get_fork(self, fork_id: str, *, wait: bool = False) -> dict[str, Any]:
        """A fork's divergence report (``wait``: once its run has ended)."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/forks/{segment(fork_id)}", params={"wait": "true" if wait else None})
        return result

    # -- suites ------------------------------------------------------------------------

    def create_suite(self, agent: str, name: str, *, description: str = "",
                     gate: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A new eval suite of ``agent``; ``gate``: ``{min_pass_rate, max_regressions,
        min_vs_baseline}``."""
        body: dict[str, Any] = {"agent": agent, "name": name, "description": description}
        if gate is not None:
            body["gate"] = dict(gate)
        result: dict[str, Any] = self._request("POST", "/v1/evals/suites", json_body=body)
        return result

    def list_suites(self, *, agent: str | None = None, name: str | None = None
                    ) -> list[dict[str, Any]]:
        result = self._request("GET", "/v1/evals/suites",
                               params={"agent": agent, "name": name})
        return list(result["suites"])

    def find_suite(self, name: str, *, agent: str | None = None) -> dict[str, Any]:
        """The suite named ``name`` (its id works too); a :class:`ClientError` when no
        suite, or more than one of several agents, has that name."""
        if name.startswith("es_"):
            try:
                return self.get_suite(name)
            except APIError as exc:
                if exc.status != 404:
                    raise
        found = self.list_suites(agent=agent, name=name)
        if not found:
            raise ClientError(f"no eval suite named {name!r}"
                              + (f" of agent {agent!r}" if agent else ""))
        if len(found) > 1:
            raise ClientError(f"agents {', '.join(s['agent'] for s in found)} each have a "
                              f"suite named {name!r}: name the agent")
        return found[0]

    def get_suite(self, suite_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/evals/suites/{segment(suite_id)}")
        return result

    def delete_suite(self, suite_id: str) -> None:
        """Delete a suite with its cases, eval runs and results."""
        self._request("DELETE", f"/v1/evals/suites/{segment(suite_id)}")

    # -- cases -------------------------------------------------------------------------

    def add_case(self, suite_id: str, run_id: str, *, name: str | None = None,
                 graders: Sequence[Mapping[str, Any]] | None = None,
                 from_step: int = 1) -> dict[str, Any]:
        """A case picked from a finished run of the suite's agent (it copies what it
        needs: deleting the run later changes nothing); ``graders`` default to
        ``[{"kind": "exact"}]`` (the run's own answer)."""
        body: dict[str, Any] = {"from_run": run_id, "from_step": from_step}
        if name is not None:
            body["name"] = name
        if graders is not None:
            body["graders"] = [dict(g) for g in graders]
        result = self._request("POST", f"/v1/evals/suites/{segment(suite_id)}/cases",
                               json_body=body)
        return dict(result["cases"][0])

    def import_cases(self, suite_id: str, cases: Iterable[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
        """Cases as an export writes them (its ``case`` lines), up to a thousand (and
        768 KiB of them) a request."""
        made: list[dict[str, Any]] = []
        chunk: list[dict[str, Any]] = []
        size = 0
        for case in cases:
            item = dict(case)
            length = len(orjson.dumps(item))
            if chunk and (len(chunk) == _IMPORT_CHUNK or size + length > _IMPORT_BYTES):
                made.extend(self._import(suite_id, chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += length
        if chunk:
            made.extend(self._import(suite_id, chunk))
        return made

    def _import(self, suite_id: str, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = self._request("POST", f"/v1/evals/suites/{segment(suite_id)}/cases",
                               json_body={"cases": chunk})
        return list(result["cases"])

    def list_cases(self, suite_id: str, *, after: int = 0, limit: int = 100
                   ) -> dict[str, Any]:
        """A page of the suite's cases: ``{cases, next_after}``."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/evals/suites/{segment(suite_id)}/cases",
            params={"after": after, "limit": limit})
        return result

    def delete_case(self, suite_id: str, case_id: str) -> None:
        self._request("DELETE",
                      f"/v1/evals/suites/{segment(suite_id)}/cases/{segment(case_id)}")

    def export_suite(self, suite_id: str) -> MemoryExport:
        """The suite as JSON lines (a header, then its cases), streamed."""
        return open_lines(self, f"/v1/evals/suites/{segment(suite_id)}/export",
                          timeout=httpx.Timeout(self._timeout, read=None))

    def import_suite(self, lines: Iterable[bytes | str | Mapping[str, Any]], *, agent: str,
                     name: str | None = None) -> dict[str, Any]:
        """A suite exported from any daemon (its lines), made again for ``agent``:
        named as it was unless ``name``. Returns ``{"suite": ..., "cases": n}``."""
        items = (orjson.loads(line) if isinstance(line, bytes | str) else dict(line)
                 for line in lines if not isinstance(line, bytes | str) or line.strip())
        header = next(items, None)
        if not isinstance(header, dict) or header.get("type") != "suite":
            raise ClientError("not an eval suite export: its first line is not a suite "
                              "header ({\"type\": \"suite\", ...})")
        suite = self.create_suite(agent, name or str(header.get("name")),
                                  description=str(header.get("description") or ""),
                                  gate=header.get("gate") or None)
        cases = (c for c in items if isinstance(c, dict) and c.get("type") == "case")
        try:
            made = self.import_cases(suite["id"], cases)
        except BaseException:
            # (a case refused: the suite is not left half made)
            with contextlib.suppress(APIError, ClientError):
                self.delete_suite(suite["id"])
            raise
        return {"suite": self.get_suite(suite["id"]), "cases": len(made)}

    # -- eval runs ---------------------------------------------------------------------

    def run_suite(self, suite_id: str, *, model: str | None = None,
                  instructions: str | None = None,
                  settings: Mapping[str, Any] | None = None, tools: str = "recorded",
                  gate: Mapping[str, Any] | None = None, priority: str | None = None,
                  concurrency: int | None = None, keep_sessions: bool = False,
                  wait: bool = False) -> dict[str, Any]:
        """Fork every case of the suite onto the candidate and grade them: the eval
        run, queued (``wait``: once it has ended, with its ``summary``)."""
        body = {**_candidate(model, instructions, settings, tools),
                "keep_sessions": keep_sessions, "wait": wait}
        for key, value in (("gate", gate), ("priority", priority),
                           ("concurrency", concurrency)):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else value
        result: dict[str, Any] = self._request(
            "POST", f"/v1/evals/suites/{segment(suite_id)}/runs", json_body=body)
        return result

    def list_eval_runs(self, suite_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The suite's eval runs, newest first."""
        result = self._request("GET", f"/v1/evals/suites/{segment(suite_id)}/runs",
                               params={"limit": limit})
        return list(result["runs"])

    def get_eval_run(self, eval_run_id: str, *, wait: bool = False) -> dict[str, Any]:
        """An eval run (``wait``: once it has ended)."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/evals/runs/{segment(eval_run_id)}",
            params={"wait": "true" if wait else None})
        return result

    def eval_results(self, eval_run_id: str, *, status: str | Sequence[str] | None = None,
                     after: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of an eval run's results: ``{results, next_after}``."""
        statuses = status if status is None or isinstance(status, str) else ",".join(status)
        result: dict[str, Any] = self._request(
            "GET", f"/v1/evals/runs/{segment(eval_run_id)}/results",
            params={"status": statuses, "after": after, "limit": limit})
        return result

    def cancel_eval_run(self, eval_run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", f"/v1/evals/runs/{segment(eval_run_id)}/cancel")
        return result

    def delete_eval_run(self, eval_run_id: str) -> None:
        self._request("DELETE", f"/v1/evals/runs/{segment(eval_run_id)}")

    def eval_junit(self, eval_run_id: str) -> str:
        """The eval run as JUnit XML."""
        try:
            response = self._http.get(f"/v1/evals/runs/{segment(eval_run_id)}/junit")
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.is_error:
            raise APIError.from_response(response)
        return response.text

    def export_eval_run(self, eval_run_id: str) -> MemoryExport:
        """The eval run's results as JSON lines (a header, then each case's)."""
        return open_lines(self, f"/v1/evals/runs/{segment(eval_run_id)}/export",
                          timeout=httpx.Timeout(self._timeout, read=None))

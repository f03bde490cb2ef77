"""An eval run's report: the aggregate of its cases, compared with the recorded
baseline and with the suite's last run before it, the gate CI decides on, and the
same as JUnit XML.

The **gate** (a suite's ``gate``, or an eval run's own) is ``{"min_pass_rate": 0..1
(default 1: every case passes), "max_regressions": n (cases that passed in the last
run and do not now; default: not checked), "min_vs_baseline": d (the pass rate may be
at most ``d`` below the baseline's; default: not checked)}``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.errors import InvalidInput
from agentd.store.evals import RESULT_STATUSES, EvalRunRecord, ResultRecord, SuiteRecord
from agentd.store.records import iso

__all__ = ["Gate", "check_gate", "error_text", "junit_xml", "summarize"]


class Gate(BaseModel):
    """What an eval run must reach for its suite to pass."""

    model_config = ConfigDict(extra="forbid")

    min_pass_rate: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    max_regressions: int | None = Field(default=None, ge=0)
    min_vs_baseline: float | None = Field(default=None, ge=0.0, le=1.0,
                                          allow_inf_nan=False)


def check_gate(raw: Any, where: str = "body.gate") -> dict[str, Any]:
    """``raw`` as a gate (as stored), or a 422 naming what is wrong."""
    try:
        return Gate.model_validate(raw or {}).model_dump(exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}.{at}: {first['msg']}", field=f"{where}.{at}") from None


def _usage(items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    total: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0}
    for usage in items:
        if not usage:
            continue
        total["input_tokens"] += int(usage.get("input_tokens") or 0)
        total["output_tokens"] += int(usage.get("output_tokens") or 0)
        if "cost_usd" in usage:
            total["cost_usd"] = round(total.get("cost_usd", 0.0) + float(usage["cost_usd"]),
                                      6)
    return total


def summarize(results: Sequence[ResultRecord], previous: Sequence[ResultRecord] | None,
              gate: Mapping[str, Any], *, previous_run: EvalRunRecord | None = None
              ) -> dict[str, Any]:
    """The aggregate of an eval run's ``results``, compared with the baseline each case
    recorded and with the ``previous`` run's results; the gate's verdict."""
    counts = Counter(r.status for r in results)
    total = len(results)
    rate = counts["passed"] / total if total else 0.0
    details = [r.detail or {} for r in results]
    baseline = _baseline(results, details)
    out: dict[str, Any] = {
        "total": total,
        **{s: counts[s] for s in RESULT_STATUSES if s not in ("queued", "running")},
        "pass_rate": round(rate, 4),
        "usage": _usage([d.get("usage") for d in details]),
        "judge_usage": (_usage([d.get("judge_usage") for d in details])
                        if any(d.get("judge_usage") for d in details) else None),
        "baseline": baseline,
        "previous": (_previous(results, previous, previous_run)
                     if previous is not None and previous_run is not None else None),
    }
    out["gate"] = _verdict(Gate.model_validate(gate or {}), rate, baseline["pass_rate"],
                           None if out["previous"] is None
                           else out["previous"]["regressions"])
    return out


def _baseline(results: Sequence[ResultRecord], details: list[dict[str, Any]]
              ) -> dict[str, Any]:
    """The recorded runs under the same graders, and the cases each side won."""
    status = [(d.get("baseline") or {}).get("status") for d in details]
    passed = sum(s == "passed" for s in status)
    return {"passed": passed,
            "pass_rate": round(passed / len(results), 4) if results else 0.0,
            "usage": _usage([(d.get("baseline") or {}).get("usage") for d in details]),
            "better": sorted(r.case_name for r, s in zip(results, status, strict=True)
                             if r.status == "passed" and s == "failed"),
            "worse": sorted(r.case_name for r, s in zip(results, status, strict=True)
                            if r.status != "passed" and s == "passed")}


def _previous(results: Sequence[ResultRecord], previous: Sequence[ResultRecord],
              run: EvalRunRecord) -> dict[str, Any]:
    """The comparison with the suite's last run: regressions, fixes, new cases."""
    before = {r.case_id: r.status for r in previous}
    passed = sum(s == "passed" for s in before.values())
    return {"eval_run_id": run.id, "n": run.n, "passed": passed,
            "pass_rate": round(passed / len(before), 4) if before else 0,
            "regressions": sorted(r.case_name for r in results
                                  if before.get(r.case_id) == "passed"
                                  and r.status != "passed"),
            "fixed": sorted(r.case_name for r in results
                            if before.get(r.case_id) in ("failed", "errored")
                            and r.status == "passed"),
            "new_cases": sum(r.case_id not in before for r in results)}


def _verdict(gate: Gate, rate: float, baseline_rate: float, regressions: list[str] | None
             ) -> dict[str, Any]:
    reasons = []
    if rate < gate.min_pass_rate:
        reasons.append(f"pass rate {rate:.1%} is below {gate.min_pass_rate:.1%}")
    if (gate.max_regressions is not None and regressions is not None
            and len(regressions) > gate.max_regressions):
        reasons.append(f"{len(regressions)} case(s) passed in the last run and do not "
                       f"now (at most {gate.max_regressions})")
    if gate.min_vs_baseline is not None and rate < baseline_rate - gate.min_vs_baseline:
        reasons.append(f"pass rate {rate:.1%} is more than {gate.min_vs_baseline:.1%} "
                       f"below the baseline's {baseline_rate:.1%}")
    return {**gate.model_dump(exclude_none=True), "passed": not reasons,
            "reasons": reasons}


def _seconds(r: ResultRecord) -> str:
    if r.claimed_at is None or r.finished_at is None:
        return "0"
    return f"{max(0.0, r.finished_at - r.claimed_at):.3f}"


def _text(value: Any, limit: int = 20_000) -> str:
    text = "" if value is None else str(value)
    # XML 1.0 has no place for most control characters: they are dropped.
    text = "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)
    return text if len(text) <= limit else text[:limit] + "..."


def error_text(error: Any) -> str:
    """A result's ``error`` (``{code, message}``; a string in results kept by an
    earlier version) as one line: ``code: message``."""
    if isinstance(error, Mapping):
        return f"{error.get('code', 'error')}: {error.get('message', '')}"
    return "" if error is None else str(error)


def junit_xml(suite: SuiteRecord, run: EvalRunRecord, results: Sequence[ResultRecord]
              ) -> bytes:
    """The eval run as JUnit XML: one ``testsuite`` (the suite), one ``testcase`` per
    case (``failure`` for a failed one with its failed grades, ``error`` for one that
    errored, ``skipped`` for one cancelled or not run), properties naming the
    candidate and the gate's verdict."""
    counts = Counter(r.status for r in results)
    skipped = counts["cancelled"] + counts["queued"] + counts["running"]
    total_time = sum(float(_seconds(r)) for r in results)
    attrs = {"name": suite.name, "tests": str(len(results)),
             "failures": str(counts["failed"]), "errors": str(counts["errored"]),
             "skipped": str(skipped), "time": f"{total_time:.3f}"}
    root = ET.Element("testsuites", {**attrs, "name": f"agentd eval {suite.name}"})
    element = ET.SubElement(root, "testsuite", {
        **attrs, "timestamp": (iso(run.started_at or run.created_at) or "")[:19],
        "hostname": "agentd", "id": run.id})
    props = ET.SubElement(element, "properties")
    summary = run.summary or {}
    for name, value in (("eval_run", run.id), ("agent", suite.agent),
                        ("model", run.candidate.get("model") or "(the agent's)"),
                        ("tools", run.candidate.get("tools") or "recorded"),
                        ("pass_rate", summary.get("pass_rate")),
                        ("gate", "passed" if (summary.get("gate") or {}).get("passed")
                         else "failed")):
        ET.SubElement(props, "property", {"name": name, "value": _text(value)})
    for r in results:
        case = ET.SubElement(element, "testcase", {
            "classname": f"agentd.eval.{suite.name}", "name": f"{r.case_name} [{r.case_id}]",
            "time": _seconds(r)})
        detail = r.detail or {}
        grades = detail.get("grades") or []
        if r.status == "failed":
            failed = [g for g in grades if g.get("passed") is False]
            why = "; ".join(f"{g['kind']}: {g.get('reason', '')}" for g in failed) or (
                f"the run ended {detail.get('run_status')}")
            ET.SubElement(case, "failure", {"message": _text(why, 1000),
                                            "type": "failed"}).text = _text(why)
        elif r.status == "errored":
            graded = "; ".join(f"{g['kind']}: {g.get('error')}" for g in grades
                               if g.get("passed") is None)
            why = _text(graded or error_text(detail.get("error")))
            ET.SubElement(case, "error", {"message": why[:1000], "type": "errored"}).text = why
        elif r.status in ("cancelled", "queued", "running"):
            ET.SubElement(case, "skipped", {"message": r.status})
        if detail.get("output") is not None:
            ET.SubElement(case, "system-out").text = _text(detail.get("output"))
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body

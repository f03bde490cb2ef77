"""Evaluations built from real sessions (issue 35): suites of cases picked from finished
runs (or imported as JSON lines), each forked onto a candidate configuration and
graded, with a report compared to the recorded baseline and to the suite's last run,
and a gate CI can decide on (:mod:`agentd.evals.service`)."""

from __future__ import annotations

from agentd.evals.graders import GRADER_KINDS, check_graders
from agentd.evals.service import Evals

__all__ = ["GRADER_KINDS", "Evals", "check_graders"]

"""What a check may answer: a verdict its point takes, or the check failed (never a
guess, never another exception), whatever the answer is."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.runtime.hooks import VERDICTS, CheckFailed, CheckVerdict, parse_verdict

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                max_size=4),
    max_leaves=12)
ANSWERS = JSON | st.fixed_dictionaries(
    {"verdict": st.sampled_from(["allow", "deny", "modify", "pass", "redact", "taint",
                                 "ALLOW", "allow ", ""])},
    optional={"reason": JSON, "arguments": JSON, "text": JSON})


@given(point=st.sampled_from(sorted(VERDICTS)), answer=ANSWERS)
def test_an_answer_is_a_verdict_of_its_point_or_the_check_failed(point: str,
                                                                 answer: Any) -> None:
    try:
        verdict = parse_verdict(point, answer)
    except CheckFailed as exc:
        assert str(exc)
        return
    assert verdict.verdict in VERDICTS[point]
    assert isinstance(verdict.reason, str) and len(verdict.reason) <= 1000
    assert (verdict.arguments is not None) == (verdict.verdict == "modify")
    assert (verdict.text is not None) == (verdict.verdict == "redact")
    if verdict.arguments is not None:
        assert isinstance(verdict.arguments, dict)


@pytest.mark.parametrize(("point", "answer", "why"), [
    ("input", {"verdict": "modify", "arguments": {}}, "must be one of allow, deny"),
    ("output", {"verdict": "redact", "text": "x"}, "must be one of allow, deny"),
    ("tool_call", {"verdict": "pass"}, "allow, deny, modify"),
    ("tool_result", {"verdict": "allow"}, "deny, pass, redact, taint"),
    ("tool_call", {"verdict": "modify"}, "without an `arguments` object"),
    ("tool_result", {"verdict": "redact", "text": 5}, "without a `text` string"),
    ("tool_call", {"verdict": "deny", "reason": ["x"]}, "not a string"),
    ("input", ["allow"], "answered list"),
    ("input", None, "answered NoneType"),
])
def test_what_is_wrong_with_an_answer_is_said(point: str, answer: Any, why: str) -> None:
    with pytest.raises(CheckFailed) as caught:
        parse_verdict(point, answer)
    assert why in str(caught.value)


def test_a_verdict_object_is_taken_as_it_is() -> None:
    verdict = parse_verdict("tool_call", CheckVerdict(verdict="modify", arguments={"a": 1},
                                                      reason="r"))
    assert verdict == CheckVerdict(verdict="modify", arguments={"a": 1}, reason="r")
    assert parse_verdict("tool_result", {"verdict": "taint", "arguments": {"x": 1},
                                         "text": "t"}) == CheckVerdict(verdict="taint")

"""A :class:`~agentd.llm.messages.Prefix` reads as the list it was made from did then,
whatever is appended to that list afterwards (a model call's messages while its turn's
events join the session's history)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.llm.messages import Prefix

_index = st.integers(-12, 12)
_bound = st.one_of(st.none(), _index)
_step = st.one_of(st.none(), st.integers(-3, 3).filter(bool))


@given(items=st.lists(st.integers(), max_size=8), grown=st.lists(st.integers(), max_size=5),
       index=_index, start=_bound, stop=_bound, step=_step)
def test_a_prefix_reads_as_the_list_did_when_it_was_made(
        items: list[int], grown: list[int], index: int, start: int | None,
        stop: int | None, step: int | None) -> None:
    then = list(items)
    prefix = Prefix(items)
    items.extend(grown)  # the history goes on
    assert len(prefix) == len(then)
    assert list(prefix) == then
    assert list(reversed(prefix)) == then[::-1]
    assert prefix[start:stop:step] == then[start:stop:step]
    assert isinstance(prefix[start:stop:step], list)
    if -len(then) <= index < len(then):
        assert prefix[index] == then[index]
    else:
        with pytest.raises(IndexError):
            prefix[index]
    assert prefix == then and then == prefix
    assert (prefix == [*then, 0]) is False
    assert bool(prefix) is bool(then)
    assert [x for x in then if x in prefix] == then
    assert (grown[0] in prefix) is (grown[0] in then) if grown else True


def test_a_prefix_is_not_equal_to_a_tuple_as_a_list_is_not() -> None:
    assert Prefix([1, 2]) != (1, 2) and [1, 2] != (1, 2)

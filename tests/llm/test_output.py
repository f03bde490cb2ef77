"""agentd.llm.output: schemas checked (what is refused and why), answers validated,
requests shaped per model, and the small values of a schema the offline model and the
stub answer with."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.errors import InvalidInput
from agentd.llm.messages import ModelRequest
from agentd.llm.output import (
    MAX_ANSWER_DEPTH,
    MAX_ANSWER_VALUES,
    MAX_UNIQUE_ITEMS,
    OutputProblem,
    Parsed,
    check_schema,
    example,
    for_target,
    format_of,
    parse_output,
    strict_ready,
)

TREE = {"$defs": {"node": {
    "type": "object",
    "properties": {"value": {"type": "integer"},
                   "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
    "required": ["value", "children"], "additionalProperties": False}},
    "$ref": "#/$defs/node"}
LINKED = {"type": "object", "properties": {
    "value": {"type": "integer"}, "next": {"anyOf": [{"type": "null"}, {"$ref": "#"}]}},
    "required": ["value", "next"], "additionalProperties": False}


@pytest.mark.parametrize("schema", [
    {}, {"type": "string"}, TREE, LINKED, {"type": "array", "items": {"$ref": "#"}},
    {"type": "object", "properties": {"n": {"$ref": "#"}}},  # optional: ends
    {"enum": [1, 2]}, {"const": {"$ref": "not a ref: data"}},
    {"type": "string", "pattern": "^[a-z]+(-[a-z]+)*$"},
    {"$id": "https://example.com/s", "type": "object"},
])
def test_good_schemas_pass(schema: dict[str, Any]) -> None:
    assert check_schema(schema) is schema


@pytest.mark.parametrize(("schema", "says"), [
    (True, "must be a JSON Schema object"),
    ({"type": 3}, "not a valid JSON Schema"),
    ({"required": "x"}, "not a valid JSON Schema"),
    ({"$ref": "#/$defs/missing"}, "points at nothing"),
    ({"$ref": "#/properties/a", "properties": {"a": {"$ref": "#"}}}, "refers back"),
    ({"$ref": "other.json#/x"}, "not a local reference"),
    ({"$ref": "#anchor"}, "not a local reference"),
    ({"$dynamicRef": "#x"}, "$dynamicRef is not supported"),
    ({"properties": {"a": {"$id": "https://evil/", "type": "string"}}}, "$id is only"),
    ({"not": {"$ref": "#"}}, "refers back"),
    ({"if": {"$ref": "#/$defs/a"}, "$defs": {"a": {"then": {"$ref": "#"}}}},
     "refers back"),
    ({"type": "array", "items": {"$ref": "#"}, "minItems": 1}, "recursive without end"),
    ({"$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}},
                      "required": ["b"]},
                "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}},
                      "required": ["a"]}}, "$ref": "#/$defs/a"}, "recursive without end"),
    ({"not": {}}, "no JSON value can match it"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]},
     "no JSON value can match it"),
    ({"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]},
     "no JSON value can match it"),
    ({"anyOf": [{"not": True}, False]}, "no JSON value can match it"),
    ({"type": "string", "pattern": "(\\w*)*$"}, "catastrophic"),
    ({"patternProperties": {"^(a|b+){2,}$": {}}}, "catastrophic"),
    ({"type": "string", "pattern": "a" * 1001}, "longer than"),
])
def test_bad_schemas_are_refused_with_a_reason(schema: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_schema(schema, "body.output_schema")
    assert says in caught.value.message
    assert caught.value.details["errors"][0]["field"] == "body.output_schema"


def test_size_depth_and_ref_counts_are_bounded() -> None:
    deep: dict[str, Any] = {}
    for _ in range(100):
        deep = {"items": deep}
    with pytest.raises(InvalidInput, match="deeper than 32"):
        check_schema(deep)
    with pytest.raises(InvalidInput, match="bytes as JSON"):
        check_schema({"description": "x" * 70_000})
    many = {"$defs": {f"d{i}": {"type": "string"} for i in range(300)},
            "anyOf": [{"$ref": f"#/$defs/d{i}"} for i in range(300)]}
    with pytest.raises(InvalidInput, match="more than 256"):
        check_schema(many)


def test_answers_are_read_and_validated() -> None:
    assert parse_output(LINKED, '{"value": 1, "next": {"value": 2, "next": null}}') == \
        Parsed({"value": 1, "next": {"value": 2, "next": None}},
               '{"value":1,"next":{"value":2,"next":null}}')
    assert isinstance(parse_output(LINKED, '```\n{"value": 1, "next": null}\n```'), Parsed)
    wrong = parse_output(LINKED, '{"value": 1, "next": {"value": "2", "next": null}}')
    assert isinstance(wrong, OutputProblem)
    assert wrong.path == "$.next" or wrong.path.startswith("$.next")
    nested = "[" * (MAX_ANSWER_DEPTH + 1) + "]" * (MAX_ANSWER_DEPTH + 1)
    assert parse_output({}, nested) == OutputProblem(
        "$", f"the answer nests deeper than {MAX_ANSWER_DEPTH} levels")
    long_value = parse_output({"type": "integer"}, orjson.dumps("x" * 5000).decode())
    assert isinstance(long_value, OutputProblem) and len(long_value.message) <= 300


def test_a_request_is_shaped_per_model() -> None:
    fmt = format_of(TREE)
    assert (fmt.name, fmt.strict, fmt.native) == ("output", True, False)
    assert format_of({"title": "My Point!", "type": "object"}).name == "My_Point"
    request = ModelRequest(system="Be brief.", output=fmt)
    native = for_target(request, native=True)
    assert native.system == "Be brief." and native.output is not None \
        and native.output.native
    asked = for_target(request, native=False)
    assert asked.system.startswith("Be brief.\n\nYour final answer")
    assert asked.output is not None and not asked.output.native
    plain = ModelRequest(system="x")
    assert for_target(plain, native=True) is plain


def test_strict_ready_wants_closed_objects_requiring_every_property() -> None:
    assert strict_ready(TREE) and strict_ready(LINKED)
    assert not strict_ready({"type": "object", "properties": {"a": {}}, "required": ["a"]})
    assert not strict_ready({"type": "object", "properties": {"a": {}},
                             "additionalProperties": False})


_scalar = st.sampled_from([{"type": "string", "minLength": 2}, {"type": "integer",
                           "minimum": 3}, {"type": "boolean"}, {"type": "null"},
                           {"enum": ["a", "b"]}, {"type": "number"}])
_schemas = st.recursive(_scalar, lambda inner: st.one_of(
    st.builds(lambda items, n: {"type": "array", "items": items, "minItems": n},
              inner, st.integers(0, 3)),
    st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner, max_size=4).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props),
                       "additionalProperties": False}),
    st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options})),
    max_leaves=12)


@given(_schemas)
def test_the_example_of_a_schema_matches_it(schema: dict[str, Any]) -> None:
    check_schema(schema)
    assert isinstance(parse_output(schema, orjson.dumps(example(schema)).decode()), Parsed)


@pytest.mark.parametrize(("schema", "answer"), [
    ({"type": "integer"}, "42"), ({"type": "string"}, '"hi"'), ({"type": "null"}, "null"),
    ({"type": "boolean"}, "true")])
def test_a_scalar_answer_is_a_value_too(schema: dict[str, Any], answer: str) -> None:
    assert parse_output(schema, answer) == Parsed(orjson.loads(answer), answer)


def test_an_answer_too_big_to_validate_safely_is_refused_before_the_validator() -> None:
    unique = {"type": "array", "items": {"type": "object"}, "uniqueItems": True}
    many = orjson.dumps([{"i": i} for i in range(MAX_UNIQUE_ITEMS + 1)]).decode()
    problem = parse_output(unique, many)
    assert isinstance(problem, OutputProblem) and "unique items" in problem.message
    assert isinstance(parse_output({"type": "array"}, many), Parsed)
    flood = orjson.dumps(list(range(MAX_ANSWER_VALUES + 1))).decode()
    problem = parse_output({"type": "array"}, flood)
    assert isinstance(problem, OutputProblem) and "more than" in problem.message


def test_the_example_of_a_huge_minimum_stays_small() -> None:
    value = example({"type": "array", "minItems": 10**9,
                     "items": {"type": "string", "minLength": 10**9}})
    assert len(value) == 64 and len(value[0]) == 1024

"""Structured output: a run's final answer held to a JSON Schema.

An agent's ``settings.output.json_schema`` or a message's ``output_schema`` asks for a
final answer that is one JSON value matching the schema. This module holds what every
layer needs of that, provider-neutral:

- :func:`check_schema`: a schema from a client, checked before anything is written
  (Draft 2020-12; only local ``$ref`` s; bounded size and depth; no ``$ref`` loop that
  never descends into the value, no recursion without a base case, no ``pattern`` whose
  nested quantifiers could backtrack for ever on a hostile answer);
- :func:`parse_output`: a model's answer read and validated, or the first schema error
  (its JSON path and message) to tell the model, or the run;
- :func:`for_target`: the request one model gets: the schema natively (the provider's
  structured-output parameter) when its catalog entry says it can, else the schema in
  the system prompt;
- :func:`strict_ready` (the schema can go to a provider's strict mode as it is) and
  :func:`example` (a small value that matches: the offline model's and the stub's
  answer).
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from agentd.errors import InvalidInput
from agentd.llm.messages import ModelRequest, OutputFormat

__all__ = ["MAX_ANSWER_BYTES", "MAX_ANSWER_DEPTH", "MAX_ANSWER_VALUES", "MAX_REFS",
           "MAX_SCHEMA_BYTES", "MAX_SCHEMA_DEPTH", "MAX_UNIQUE_ITEMS", "OutputProblem",
           "Parsed", "check_pattern", "check_schema", "example", "for_target", "format_of",
           "parse_output", "repair_prompt", "strict_ready", "validate_inline"]

#: A schema's size as JSON, and how deep its objects and arrays nest. (Checking one
#: against the draft 2020-12 meta-schema costs jsonschema about 15 ms of CPU per KiB.)
MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 32
#: ``$ref`` s in one schema.
MAX_REFS = 256
#: An answer's size and nesting (a hostile model's huge or deep JSON is an error to
#: repair, not work for the validator).
MAX_ANSWER_BYTES = 1024 * 1024
MAX_ANSWER_DEPTH = 64
MAX_ANSWER_VALUES = 100_000
MAX_UNIQUE_ITEMS = 2_000
#: The most items and characters :func:`example` makes (a schema's ``minItems`` of a
#: billion must not become a billion items in the offline model).
_EXAMPLE_ITEMS = 64
_EXAMPLE_CHARS = 1024
#: How much of a schema error's message is kept (it quotes the offending value).
_MESSAGE_CHARS = 300
_PATTERN_CHARS = 1000

#: Keywords whose subschemas apply to the same value (a ``$ref`` cycle through only
#: these never ends) and those that descend into a part of it.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_DESCEND_ONE = ("additionalProperties", "unevaluatedProperties", "propertyNames", "items",
                "contains", "unevaluatedItems")
_DESCEND_MAP = ("properties", "patternProperties")
_SCALARS = frozenset({"null", "boolean", "number", "integer", "string"})
#: A group repeated without bound (``(...)+``, ``(...)*``, ``(...){2,}``), and what makes
#: its repetitions ambiguous: a quantifier inside it with an alternation, or with its
#: first atom repeated (``(a+)+``, ``(\w+\s?)*``, ``(a|b+){2,}``): catastrophic
#: backtracking in Python's ``re``. A repetition that starts with a fixed character
#: (``(-[a-z]+)*``) is delimited, and allowed.
_REPEATED_GROUP = re.compile(r"\(((?:[^()\\]|\\.)*)\)(?:[+*]|\{\d+,\d*\})")
_QUANTIFIER = re.compile(r"(?<!\\)(?:[+*]|\{\d+,\d*\})")
_ATOM_REPEATED = re.compile(r"^(?:\\.|\[(?:[^\]\\]|\\.)*\]|[^\\(\[])(?:[+*?]|\{\d+,?\d*\})")
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*)\n\s*```$", re.DOTALL)


# -- checking a schema ------------------------------------------------------------------


def check_schema(schema: Any, where: str = "output_schema") -> dict[str, Any]:
    """``schema`` if it is a JSON Schema agentd can hold an answer to; else
    :class:`InvalidInput` naming ``where`` and the first problem."""
    if not isinstance(schema, dict):
        raise InvalidInput(f"{where} must be a JSON Schema object", field=where)
    _check_depth(schema, where)
    try:
        size = len(orjson.dumps(schema))
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"{where} is not JSON: {exc}", field=where) from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidInput(f"{where} is {size} bytes as JSON; at most {MAX_SCHEMA_BYTES}",
                           field=where)
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    if key in _accepted:
        _accepted.move_to_end(key)
        return schema  # (a client sends the same schema with every request)
    # jsonschema is imported when a schema is first checked: about 50 ms that a daemon
    # whose agents ask for no structured output never pays.
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = "".join(f"[{p!r}]" for p in exc.path)
        raise InvalidInput(f"{where} is not a valid JSON Schema (draft 2020-12): "
                           f"{_short(exc.message)}" + (f" (at {at})" if at else ""),
                           field=where) from None
    targets = _check_refs(schema, where)
    _check_loops(schema, targets, where)
    if not _finite_fixpoint(schema, targets):
        if not targets:  # (nothing recursive: a part nothing matches)
            raise InvalidInput(
                f"{where}: no JSON value can match it (a required part nothing matches: "
                "a property whose schema is false, {\"not\": {}}, an empty enum)",
                field=where)
        raise InvalidInput(
            f"{where} is recursive without end: no finite JSON value can match it (a "
            "$ref cycle where every branch requires going round again, or a required "
            "part nothing matches; give it a base case, such as an optional property or "
            "an anyOf with null)", field=where)
    _accepted[key] = None
    if len(_accepted) > _ACCEPTED:
        _accepted.popitem(last=False)
    return schema


#: Schemas accepted lately (as sorted JSON), not checked again.
_ACCEPTED = 256
_accepted: OrderedDict[bytes, None] = OrderedDict()


def _check_depth(schema: dict[str, Any], where: str) -> None:
    """Nesting of objects and arrays, walked without recursion."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidInput(f"{where} nests deeper than {MAX_SCHEMA_DEPTH} levels",
                               field=where)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _subschemas(node: Any) -> Iterator[tuple[Any, bool]]:
    """Each subschema of ``node`` and whether it applies to the same value."""
    if not isinstance(node, dict):
        return
    for key in _IN_PLACE_ONE:
        if key in node:
            yield node[key], True
    for key in _IN_PLACE_MANY:
        for sub in node.get(key) or ():
            yield sub, True
    for sub in (node.get("dependentSchemas") or {}).values():
        yield sub, True
    for key in _DESCEND_ONE:
        if key in node:
            yield node[key], False
    for key in _DESCEND_MAP:
        for sub in (node.get(key) or {}).values():
            yield sub, False
    for sub in node.get("prefixItems") or ():
        yield sub, False
    for key in ("$defs", "definitions"):
        for sub in (node.get(key) or {}).values():
            yield sub, False  # (applied only through a $ref)


def _walk(schema: Any) -> Iterator[tuple[Any, bool]]:
    """Every schema node under ``schema`` (itself first)."""
    stack: list[tuple[Any, bool]] = [(schema, True)]
    while stack:
        node, root = stack.pop()
        yield node, root
        stack.extend((sub, False) for sub, _ in _subschemas(node))


def _resolve(schema: dict[str, Any], ref: str) -> Any:
    """The subschema a local ``#/...`` pointer names (KeyError if none)."""
    node: Any = schema
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(ref)
    return node


def _check_refs(schema: dict[str, Any], where: str) -> dict[str, Any]:
    """Every ``$ref`` is a local JSON pointer to a schema; no other reference keyword;
    no pattern that could backtrack for ever. The targets, by pointer."""
    targets: dict[str, Any] = {}
    for node, root in _walk(schema):
        if not isinstance(node, dict):
            continue
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                raise InvalidInput(f"{where}: {keyword} is not supported (use $ref)",
                                   field=where)
        if "$id" in node and not root:
            raise InvalidInput(f"{where}: $id is only allowed at the top of the schema",
                               field=where)
        for pattern in [node.get("pattern"), *(node.get("patternProperties") or {})]:
            if isinstance(pattern, str):
                check_pattern(pattern, where)
        ref = node.get("$ref")
        if ref is None:
            continue
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise InvalidInput(f"{where}: $ref {ref!r} is not a local reference; only "
                               "JSON pointers into the schema itself ('#/$defs/...') are "
                               "supported", field=where)
        if ref not in targets:
            if len(targets) >= MAX_REFS:
                raise InvalidInput(f"{where} has more than {MAX_REFS} distinct $refs",
                                   field=where)
            try:
                target = _resolve(schema, ref)
            except KeyError:
                raise InvalidInput(f"{where}: $ref {ref!r} points at nothing",
                                   field=where) from None
            if not isinstance(target, dict | bool):
                raise InvalidInput(f"{where}: $ref {ref!r} points at a value that is not "
                                   "a schema", field=where)
            targets[ref] = target
    return targets


def check_pattern(pattern: str, where: str) -> None:
    """A regular expression from a client, refused (422 naming ``where``) when it is
    too long or quantifies a group that holds a quantifier (catastrophic backtracking
    on a hostile text): the guard on output schemas' ``pattern`` s."""
    if len(pattern) > _PATTERN_CHARS:
        raise InvalidInput(f"{where}: a pattern is longer than {_PATTERN_CHARS} "
                           "characters", field=where)
    if any(_ambiguous(m.group(1)) for m in _REPEATED_GROUP.finditer(pattern)):
        raise InvalidInput(f"{where}: pattern {_short(pattern, 80)!r} quantifies a group "
                           "that holds a quantifier (catastrophic backtracking on a "
                           "hostile answer); rewrite it without nested repetition",
                           field=where)


def _ambiguous(body: str) -> bool:
    """Whether a repeated group's ``body`` can match one string in many ways."""
    body = body.removeprefix("?:")
    if not _QUANTIFIER.search(body):
        return False
    return "|" in body or bool(_ATOM_REPEATED.match(body))


def _in_place_refs(node: Any) -> Iterator[str]:
    """The ``$ref`` s that apply to the same value as ``node``."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict) and isinstance(current.get("$ref"), str):
            yield current["$ref"]
        stack.extend(sub for sub, same in _subschemas(current) if same)


def _check_loops(schema: dict[str, Any], targets: dict[str, Any], where: str) -> None:
    """No ``$ref`` cycle that never descends into the value (the validator would go
    round it for ever on the first value it checks)."""
    edges = {ref: list(_in_place_refs(target)) for ref, target in targets.items()}
    edges["#"] = list(_in_place_refs(schema))
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in edges:
        if state.get(start):
            continue
        path = [(start, iter(edges[start]))]
        state[start] = 1
        while path:
            ref, nexts = path[-1]
            following = next(nexts, None)
            if following is None:
                state[ref] = 2
                path.pop()
                continue
            if state.get(following) == 1:
                raise InvalidInput(f"{where}: $ref {following!r} refers back to itself "
                                   "without descending into the value (an endless "
                                   "recursion)", field=where)
            if not state.get(following):
                state[following] = 1
                path.append((following, iter(edges.get(following, ()))))


def _finite_fixpoint(schema: dict[str, Any], targets: dict[str, Any]) -> bool:
    """Whether some finite value can match ``schema``: the least fixpoint over the
    ``$ref`` targets (a target is finite once it can be built from finite ones)."""
    env = dict.fromkeys(targets, False)
    # A worklist: a target is looked at again only when one it refers to became finite
    # (each becomes so at most once), so a long chain of $refs costs one pass, not one
    # pass per link.
    dependents: dict[str, set[str]] = {ref: set() for ref in targets}
    for ref, target in targets.items():
        for node, _ in _walk(target):
            used = node.get("$ref") if isinstance(node, dict) else None
            if isinstance(used, str) and used in dependents:
                dependents[used].add(ref)
    work = list(targets)
    while work:
        ref = work.pop()
        if env[ref] or not _finite(targets[ref], env, 0):
            continue
        env[ref] = True
        work.extend(d for d in dependents[ref] if not env[d])
    return _finite(schema, env, 0)


# complexity: one rule per keyword that can require a part of the value.
def _finite(node: Any, env: dict[str, bool], depth: int) -> bool:
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict) or depth > MAX_SCHEMA_DEPTH:
        return True
    ref = node.get("$ref")
    if isinstance(ref, str) and not env.get(ref, False):
        return False
    if not all(_finite(s, env, depth + 1) for s in node.get("allOf") or ()):
        return False
    for key in ("anyOf", "oneOf"):
        if key in node and not any(_finite(s, env, depth + 1) for s in node[key]):
            return False
    if node.get("not") is True or node.get("not") == {}:
        return False  # (a value that is not anything)
    if "const" in node:
        return True
    if "enum" in node:
        return bool(node["enum"])
    kinds = node.get("type")
    allowed = {kinds} if isinstance(kinds, str) else set(kinds or _SCALARS | {"object",
                                                                              "array"})
    if allowed & _SCALARS:
        return True
    if "object" in allowed:
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties", True)
        if all(_finite(properties.get(name, extra), env, depth + 1)
               for name in node.get("required") or ()):
            return True
    if "array" in allowed:
        prefix = node.get("prefixItems") or []
        items = node.get("items", True)
        need = int(node.get("minItems") or 0)
        if all(_finite(prefix[i] if i < len(prefix) else items, env, depth + 1)
               for i in range(min(need, len(prefix) + 1))):
            return True
    return False


def _short(text: str, limit: int = _MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- validating an answer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """An answer that matches: its value and its JSON text."""

    value: Any
    text: str


@dataclass(frozen=True, slots=True)
class OutputProblem:
    """The first thing wrong with an answer: where (a JSON path, ``$`` the whole
    answer) and what."""

    path: str
    message: str

    def describe(self) -> str:
        return f"at {self.path}: {self.message}"


@functools.lru_cache(maxsize=64)
def _validator(schema_json: bytes) -> Any:
    """A validator of the schema (as sorted JSON: equal schemas share one)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(orjson.loads(schema_json))


def _unfenced(text: str) -> str:
    text = text.strip()
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text


def _too_big(value: Any, unique: bool) -> str | None:
    """Why the validator should not be given ``value`` (too deep, too many values, an
    array too long to check for unique items: jsonschema compares objects pairwise),
    if it should not."""
    if not isinstance(value, dict | list):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_ANSWER_DEPTH:
            return f"the answer nests deeper than {MAX_ANSWER_DEPTH} levels"
        count += len(node)
        if count > MAX_ANSWER_VALUES:
            return f"the answer holds more than {MAX_ANSWER_VALUES} values"
        if unique and isinstance(node, list) and len(node) > MAX_UNIQUE_ITEMS:
            return (f"an array of {len(node)} items where the schema asks for unique "
                    f"items (at most {MAX_UNIQUE_ITEMS} are checked)")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return None


@functools.lru_cache(maxsize=64)
def _asks_unique(schema_json: bytes) -> bool:
    return b'"uniqueItems":true' in schema_json


def parse_output(schema: dict[str, Any], text: str) -> Parsed | OutputProblem:
    """``text`` (the model's final answer; a Markdown code fence around it is
    dropped) read as JSON and validated against ``schema``."""
    body = _unfenced(text)
    if len(body) > MAX_ANSWER_BYTES // 4 and len(body.encode()) > MAX_ANSWER_BYTES:
        return OutputProblem("$", f"the answer is over {MAX_ANSWER_BYTES} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return OutputProblem("$", _short(f"the answer is not JSON: {exc}"))
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    too_big = _too_big(value, _asks_unique(key))
    if too_big is not None:
        return OutputProblem("$", too_big)
    from jsonschema.exceptions import best_match

    try:
        error = best_match(_validator(key).iter_errors(value))
    except RecursionError:
        return OutputProblem("$", "the answer is too deeply recursive to validate")
    if error is not None:
        return OutputProblem(error.json_path, _short(error.message))
    return Parsed(value, orjson.dumps(value).decode())


#: An answer longer than this is best validated off the event loop.
_INLINE_BYTES = 64 * 1024


def validate_inline(schema: dict[str, Any], text: str) -> bool:
    """Whether :func:`parse_output` of ``text`` is cheap enough to run on the event
    loop: a short answer, and a schema with no ``pattern`` (a regular expression may
    backtrack long on a hostile answer)."""
    return len(text) <= _INLINE_BYTES and not _has_pattern(
        orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=64)
def _has_pattern(schema_json: bytes) -> bool:
    return b'"pattern' in schema_json


def repair_prompt(problem: OutputProblem) -> str:
    """What the model is told after an answer that did not match."""
    return (f"[Your answer does not match the required JSON Schema: {problem.describe()}. "
            "Answer again with only a JSON value that matches the schema, and no other "
            "text.]")


# -- asking a model -----------------------------------------------------------------------


def format_of(schema: dict[str, Any]) -> OutputFormat:
    """The output format of a checked schema: named after its title (else ``output``),
    strict when a provider's strict mode takes it as it is."""
    title = schema.get("title")
    name = _NAME.sub("_", title)[:64].strip("_") if isinstance(title, str) else ""
    return OutputFormat(schema=schema, name=name or "output", strict=strict_ready(schema))


def for_target(request: ModelRequest, native: bool) -> ModelRequest:
    """The request as one model of the run's chain gets it: the schema natively when
    ``native`` (its provider's structured-output parameter), else in the system
    prompt."""
    fmt = request.output
    if fmt is None:
        return request
    if native:
        return request if fmt.native else replace(request, output=replace(fmt, native=True))
    return _prompted(request, replace(fmt, native=False))


def _prompted(request: ModelRequest, fmt: OutputFormat) -> ModelRequest:
    ask = ("Your final answer (after any tool calls) must be one JSON value that matches "
           "this JSON Schema, with no other text before or after it:\n"
           + orjson.dumps(fmt.schema).decode())
    system = f"{request.system}\n\n{ask}" if request.system else ask
    return replace(request, system=system, output=fmt)


def strict_ready(schema: dict[str, Any]) -> bool:
    """Whether every object of ``schema`` closes its properties
    (``additionalProperties: false``) and requires them all: what the providers'
    strict structured output demands."""
    for node, _ in _walk(schema):
        if not isinstance(node, dict):
            continue
        kinds = node.get("type")
        if kinds == "object" or (isinstance(kinds, list) and "object" in kinds) \
                or "properties" in node:
            if node.get("additionalProperties") is not False:
                return False
            if set(node.get("required") or ()) != set(node.get("properties") or {}):
                return False
    return True


# complexity: one case per JSON type and combining keyword.
def example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value that matches ``schema`` (best effort: the offline model's and the
    stub server's answer to a request for structured output)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 16:
        return None
    if isinstance(schema.get("$ref"), str):
        try:
            return example(_resolve(root, schema["$ref"]), root, depth + 1)
        except KeyError:
            return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = schema[key]
            simple = [o for o in options if isinstance(o, dict) and "$ref" not in o]
            return example((simple or options)[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return example({**merged, **{k: v for k, v in schema.items() if k != "allOf"}},
                       root, depth + 1)
    kinds = schema.get("type")
    kind = (kinds[0] if isinstance(kinds, list) and kinds else kinds) or (
        "object" if "properties" in schema else "string")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example(properties.get(name, {}), root, depth + 1)
                for name in schema.get("required") or ()}
    if kind == "array":
        items = schema.get("items", {})
        return [example(items, root, depth + 1)
                for _ in range(min(int(schema.get("minItems") or 0), _EXAMPLE_ITEMS))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum")) or 0
        value = max(0, low + (1 if "exclusiveMinimum" in schema else 0))
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "x" * min(int(schema.get("minLength") or 0), _EXAMPLE_CHARS)

"""Harmless built-in tools that prove the loop. The real tool set comes with the sandbox."""

from __future__ import annotations

import ast
import datetime as _dt
import math
import operator
import zoneinfo
from collections.abc import Callable
from typing import Any

from agentd.errors import ToolError
from agentd.tools.base import Tool, tool

__all__ = ["BUILTINS", "calculator", "current_time"]


@tool(read_only=True)
def current_time(timezone: str = "UTC") -> str:
    """Return the current date and time as ISO 8601.

    Args:
        timezone: an IANA time zone name such as "Europe/Paris".
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone[:100]!r}",
                        code="tool_bad_arguments") from None
    return _dt.datetime.now(zone).isoformat(timespec="seconds")


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
    "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
}
_CONSTS = {"pi": math.pi, "e": math.e}
_MAX_POWER = 10_000
#: Integers stay below this many bits (about 4,200 digits: what ``str`` will print).
#: The bound is checked before a power or a product is computed, so no step of an
#: expression costs more than a multiplication of two such numbers. (The tool also
#: runs in a worker process killed at the time limit; this is the courtesy, that
#: the wall.)
_MAX_BITS = 14_000


def _too_big() -> ToolError:
    return ToolError(f"the result would have more than {_MAX_BITS} bits",
                     code="tool_bad_arguments")


def _bounded(op: ast.operator, left: Any, right: Any) -> None:
    if isinstance(op, ast.Pow):
        if abs(right) > _MAX_POWER:
            raise ToolError("exponent too large", code="tool_bad_arguments")
        if (isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left) > 1 and (abs(left).bit_length() - 1) * right > _MAX_BITS):
            raise _too_big()
    elif (isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int)
          and left.bit_length() + right.bit_length() > _MAX_BITS + 1):
        raise _too_big()


def _call(name: str, args: list[Any]) -> Any:
    if name == "round" and len(args) > 1 and (not isinstance(args[1], int)
                                              or abs(args[1]) > 400):
        # round(1, -10**9) would compute 10**(10**9) first.
        raise ToolError("round's digits must be an integer from -400 to 400",
                        code="tool_bad_arguments")
    return _FUNCS[name](*args)


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if isinstance(node.value, int) and node.value.bit_length() > _MAX_BITS:
            raise _too_big()
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        _bounded(node.op, left, right)
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(value, int) and value.bit_length() > _MAX_BITS:
            raise _too_big()
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS and not node.keywords):
        return _call(node.func.id, [_eval(a) for a in node.args])
    raise ToolError(f"unsupported expression: {ast.dump(node)[:80]}", code="tool_bad_arguments")


@tool(read_only=True, isolated=True)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression (+ - * / // % **, sqrt, log, sin, pi, ...).

    Args:
        expression: for example "2 * (3 + 4) ** 2".
    """
    if len(expression) > 1000:
        raise ToolError("expression longer than 1000 characters", code="tool_bad_arguments")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, MemoryError, RecursionError):
        raise ToolError(f"not an expression: {expression!r}", code="tool_bad_arguments") from None
    try:
        return str(_eval(tree))
    except ZeroDivisionError:
        raise ToolError("division by zero", code="tool_bad_arguments") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot compute: {exc}", code="tool_bad_arguments") from None
    except RecursionError:
        raise ToolError("the expression is nested too deeply", code="tool_bad_arguments"
                        ) from None


BUILTINS: dict[str, Tool] = {t.name: t for t in (current_time, calculator)}

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
from agentd.tools._tool import Tool, tool

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
        raise ToolError(f"unknown time zone {timezone!r}", code="tool_bad_arguments") from None
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


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POWER:
            raise ToolError("exponent too large", code="tool_bad_arguments")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS and not node.keywords):
        return _FUNCS[node.func.id](*(_eval(a) for a in node.args))
    raise ToolError(f"unsupported expression: {ast.dump(node)[:80]}", code="tool_bad_arguments")


@tool(read_only=True)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression (+ - * / // % **, sqrt, log, sin, pi, ...).

    Args:
        expression: for example "2 * (3 + 4) ** 2".
    """
    if len(expression) > 1000:
        raise ToolError("expression longer than 1000 characters", code="tool_bad_arguments")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ToolError(f"not an expression: {expression!r}", code="tool_bad_arguments") from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero", code="tool_bad_arguments") from None
    except (OverflowError, ValueError) as exc:
        raise ToolError(f"cannot compute: {exc}", code="tool_bad_arguments") from None
    return str(value)


BUILTINS: dict[str, Tool] = {t.name: t for t in (current_time, calculator)}

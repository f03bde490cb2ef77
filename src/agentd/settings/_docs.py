"""The agent settings table of docs/configuration.md, generated from the model (a test
keeps the docs equal to it). Regenerate with ``python -m agentd.settings._docs``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentd.settings._model import AgentSettings
from agentd.trust import OperatorOnly

__all__ = ["markdown_table"]

_NAMES = {"integer": "integer", "number": "number", "string": "string",
          "boolean": "boolean", "array": "list", "object": "object"}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _kind(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return "object"
    if "anyOf" in schema:
        kinds = [_kind(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    if "const" in schema:
        return f'`"{schema["const"]}"`'
    if "enum" in schema:
        return " or ".join(f'`"{v}"`' for v in schema["enum"])
    kind = _NAMES.get(str(schema.get("type")), "any")
    bounds = []
    if "minimum" in schema:
        bounds.append(f"≥ {_num(schema['minimum'])}")
    if "exclusiveMinimum" in schema:
        bounds.append(f"> {_num(schema['exclusiveMinimum'])}")
    if "maximum" in schema:
        bounds.append(f"≤ {_num(schema['maximum'])}")
    if "exclusiveMaximum" in schema:
        bounds.append(f"< {_num(schema['exclusiveMaximum'])}")
    if "minLength" in schema or "maxLength" in schema:
        bounds.append(f"{schema.get('minLength', 0)}-{schema['maxLength']} characters"
                      if "maxLength" in schema else f"≥ {schema['minLength']} characters")
    if "maxItems" in schema:
        bounds.append(f"up to {schema['maxItems']}")
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def _default(name: str) -> str:
    info = AgentSettings.model_fields[name]
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "`{}`"
    if isinstance(value, list):
        return "`[]`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{_num(value)}`" if isinstance(value, float) else f"`{value}`"


def markdown_table() -> str:
    """One row per key of :class:`AgentSettings`: type and range, default, meaning."""
    schema = AgentSettings.model_json_schema()
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        meaning = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
        if any(isinstance(m, OperatorOnly)
               for m in AgentSettings.model_fields[name].metadata):
            meaning = "**Operator-only** (docs/security.md). " + meaning
        rows.append(f"| `{name}` | {_kind(prop)} | {_default(name)} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")

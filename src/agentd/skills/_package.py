"""A skill package: a folder holding ``SKILL.md`` (YAML front matter, then the
instructions) and optional files, in the Agent Skills layout (agentskills.io).

Front matter fields (anything else is refused, so a typo does not pass silently):

=================  ==========================================================
``name``           required; 1-64 of ``a-z``, ``0-9`` and ``-``, not starting or
                   ending with ``-``, no ``--``; equal to the folder's name
``description``    required; 1-1024 characters: what the skill does and when to
                   use it (the only text of a skill in every run's context)
``license``        optional; a license name or a file of the package
``compatibility``  optional; 1-500 characters: what the skill needs
``metadata``       optional; a map of string keys to string values
``allowed-tools``  optional; space-separated tool names the skill expects
=================  ==========================================================

Every problem is an :class:`~agentd.errors.InvalidInput` (``invalid_skill``) naming
the field (``SKILL.md.name``, ``SKILL.md.description``, ``SKILL.md`` for the front
matter as a whole, ``archive`` for a member of an archive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentd.errors import InvalidInput

__all__ = ["LIMITS", "SKILL_FILE", "Limits", "SkillMeta", "check_name", "invalid",
           "parse_skill_md"]

SKILL_FILE = "SKILL.md"
NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TOOL = re.compile(r"^[A-Za-z0-9_.:()*/-]{1,128}\Z")
_KNOWN = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What a package may hold (a zip bomb is refused while it is being read)."""

    max_files: int = 1000
    max_total_bytes: int = 64 << 20
    max_file_bytes: int = 32 << 20
    max_skill_md_bytes: int = 256 << 10
    max_depth: int = 16
    max_path_chars: int = 512


LIMITS = Limits()


def invalid(message: str, where: str) -> InvalidInput:
    """A refused package: ``invalid_skill`` naming ``where`` (in the message too)."""
    return InvalidInput(f"{where}: {message}", code="invalid_skill", field=where)


@dataclass(frozen=True, kw_only=True, slots=True)
class SkillMeta:
    """What ``SKILL.md`` says: its front matter and its body (the instructions)."""

    name: str
    description: str
    body: str
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    allowed_tools: tuple[str, ...] = ()


def check_name(name: object, where: str = "SKILL.md.name") -> str:
    """``name`` if it is a valid skill name, else ``invalid_skill`` saying why."""
    if not isinstance(name, str) or not name:
        raise invalid("a skill's name is required: a string of 1-64 characters", where)
    if len(name) > 64:
        raise invalid(f"skill name is {len(name)} characters long: at most 64", where)
    if not NAME.match(name):
        raise invalid(f"invalid skill name {name[:80]!r}: use lowercase letters, digits "
                      "and single hyphens, not starting or ending with a hyphen", where)
    return name


def _text(value: object, key: str, low: int, high: int) -> str:
    where = f"SKILL.md.{key}"
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string (got {type(value).__name__})", where)
    if not low <= len(value.strip()) or len(value) > high:
        raise invalid(f"{key} must be {low}-{high} characters (got {len(value)})", where)
    if _CONTROL.search(value):
        raise invalid(f"{key} holds control characters", where)
    return value.strip()


# complexity: one check per rule of the SKILL.md format (size, encoding, front matter,
# each field), each refusing with the field it names; a package comes from outside.
def parse_skill_md(data: bytes, folder: str | None = None) -> SkillMeta:
    """Read ``SKILL.md``; ``folder``: the name of the folder holding it (must equal
    the skill's name), None when the package has none (a flat archive)."""
    if len(data) > LIMITS.max_skill_md_bytes:
        raise invalid(f"SKILL.md is {len(data)} bytes: at most "
                      f"{LIMITS.max_skill_md_bytes}", "SKILL.md")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise invalid("SKILL.md is not UTF-8 text", "SKILL.md") from None
    match = _FRONT.match(text)
    if match is None:
        raise invalid("SKILL.md must start with YAML front matter between '---' lines "
                      "(name and description)", "SKILL.md")
    try:
        # safe_load: plain data only, no Python objects; aliases are bounded by the
        # file's size limit above.
        front: Any = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise invalid(f"SKILL.md's front matter is not valid YAML{where}",
                      "SKILL.md") from None
    if not isinstance(front, dict):
        raise invalid("SKILL.md's front matter must be a mapping of fields", "SKILL.md")
    unknown = sorted(str(k) for k in front if k not in _KNOWN)
    if unknown:
        raise invalid(f"unknown front matter field(s): {', '.join(unknown)} (known: "
                      f"{', '.join(_KNOWN)})", f"SKILL.md.{unknown[0]}")
    if "name" not in front:
        raise invalid("the front matter has no name", "SKILL.md.name")
    name = check_name(front["name"])
    if folder is not None and folder != name:
        raise invalid(f"the skill's name {name!r} must equal its folder's name "
                      f"{folder[:80]!r}", "SKILL.md.name")
    if "description" not in front:
        raise invalid("the front matter has no description", "SKILL.md.description")
    description = _text(front["description"], "description", 1, 1024)
    license_ = front.get("license")
    if license_ is not None:
        license_ = _text(license_, "license", 1, 200)
    compatibility = front.get("compatibility")
    if compatibility is not None:
        compatibility = _text(compatibility, "compatibility", 1, 500)
    metadata = front.get("metadata") or {}
    if not isinstance(metadata, dict) or len(metadata) > 64 or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            and len(k) <= 128 and len(str(v)) <= 1024 for k, v in metadata.items()):
        raise invalid("metadata must be a map of at most 64 string keys to short string "
                      "values", "SKILL.md.metadata")
    tools = front.get("allowed-tools") or ""
    if isinstance(tools, list) and all(isinstance(t, str) for t in tools[:65]):
        # (only strings: str() of nested aliased lists could be exponentially long)
        tools = " ".join(tools[:65])
    if not isinstance(tools, str) or not all(_TOOL.match(t) for t in tools.split()) or (
            len(tools.split()) > 64):
        raise invalid("allowed-tools must be space-separated tool names (at most 64)",
                      "SKILL.md.allowed-tools")
    body = text[match.end():].strip("\r\n")
    return SkillMeta(name=name, description=" ".join(description.split()), body=body,
                     license=license_, compatibility=compatibility,
                     metadata={k: str(v) for k, v in metadata.items()},
                     allowed_tools=tuple(tools.split()))

"""The agent's skill tools: ``skill_load`` (a skill's instructions and its list of
files) and ``skill_read`` (one of its files). Both read ``ToolContext.services
["skills"]`` (:class:`agentd.skills.service.Skills`) and serve only the skills the
calling agent has enabled; arguments are the model's, so names and paths are checked
(a path stays inside the skill's folder: no ``..``, no absolute path, no link).
"""

from __future__ import annotations

from agentd.errors import AgentdError, ToolError
from agentd.skills.service import Skills
from agentd.tools.base import Tool, ToolContext, acting, tool

__all__ = ["MAX_READ_BYTES", "SKILL_TOOLS", "skill_load", "skill_read"]

#: The most of one file ``skill_read`` returns.
MAX_READ_BYTES = 256 << 10


def _service(ctx: ToolContext) -> Skills:
    service = ctx.service(Skills)
    if service is None or not ctx.agent_id:
        raise ToolError("skills are not available here", code="skills_unavailable")
    return service


@tool(read_only=True)
async def skill_load(name: str, ctx: ToolContext) -> str:
    """Read one of your skills: its instructions, and the files it comes with.

    Args:
        name: the skill's name, as listed in <skills>
    """
    from agentd.skills.service import SANDBOX_ROOT

    service = _service(ctx)
    info = await service.usable(ctx, name)
    try:
        meta = await service.registry.load(info.name)
    except AgentdError as exc:
        raise ToolError(f"skill {name!r} cannot be read: {exc.message}",
                        code="skill_unreadable") from None
    parts = [f'<skill name="{info.name}">', meta.body, "</skill>"]
    others = [f for f in info.files if f != "SKILL.md"]
    if others:
        where = (f", or at {SANDBOX_ROOT}/{info.name}/PATH (read-only) in your shell "
                 "commands" if getattr(ctx.sandbox, "binds", None) is not None else "")
        parts.append(f"Files of this skill (read one with skill_read{where}):")
        parts += [f"- {f}" for f in others]
    return "\n".join(parts)


@tool(read_only=True)
async def skill_read(name: str, path: str, ctx: ToolContext) -> str:
    """Read a file that comes with one of your skills (text, up to 256 KB).

    Args:
        name: the skill's name
        path: the file's path inside the skill, as skill_load lists it
    """
    service = _service(ctx)
    info = await service.usable(ctx, name)
    data, size = await acting(service.registry.read(info.name, path,
                                                    max_bytes=MAX_READ_BYTES))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{path} is a binary file of {size} bytes: not shown"
    if size > len(data):
        text += f"\n[... cut: the file has {size} bytes, the first {len(data)} shown]"
    return text


SKILL_TOOLS: dict[str, Tool] = {t.name: t for t in (skill_load, skill_read)}

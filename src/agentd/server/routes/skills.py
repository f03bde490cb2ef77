"""/v1/skills: the daemon's skill registry; /v1/agents/{name}/skills/{skill}: an
agent's enabled skills (``settings.skills.enabled``)."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from agentd.doors.access import require_right, require_unscoped
from agentd.doors.http import loads_strict, model_response
from agentd.errors import Forbidden
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.routes.agents import _out as agent_out
from agentd.server.schemas import AgentOut
from agentd.settings.skills import SKILL_NAME_PATTERN

__all__ = ["MAX_ARCHIVE_BYTES", "agent_router", "router"]

#: The largest archive body ``POST /v1/skills`` takes (instead of ``max_body_bytes``).
MAX_ARCHIVE_BYTES = 64 << 20

router = APIRouter(prefix="/v1/skills", tags=["skills"])
agent_router = APIRouter(prefix="/v1/agents/{name}/skills", tags=["skills"])

SkillName = Annotated[str, Path(min_length=1, max_length=64, pattern=SKILL_NAME_PATTERN,
                                description="The skill's name.")]
_ARCHIVES = ("application/zip", "application/gzip", "application/x-gzip",
             "application/x-tar", "application/octet-stream")


class FolderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096,
                      description="An absolute path to a skill's folder on the daemon's "
                                  "host (admin tokens only); the folder is copied.")
    replace: bool = Field(default=False, strict=True,
                          description="Replace an installed skill of the same name.")


class SkillOut(BaseModel):
    name: str
    description: str
    license: str | None
    compatibility: str | None
    metadata: dict[str, str]
    allowed_tools: list[str]
    size: int = Field(description="Bytes of all its files.")
    files: list[str] = Field(description="Its files' paths, relative to its folder.")
    installed_at: str | None
    hash: str = Field(description="`sha256:` of its files' paths and contents.")


class SkillDetail(SkillOut):
    body: str = Field(description="SKILL.md's instructions (after the front matter).")


class SkillList(BaseModel):
    skills: list[SkillOut]


@router.get("", response_model=SkillList)
async def list_skills(request: Request) -> Response:
    """The installed skills, by name."""
    skills = runtime_of(request).skills.registry.list()
    return model_response(SkillList, {"skills": [s.to_api() for s in skills]})


@router.post("", status_code=201, response_model=SkillOut,
             responses=ERRORS(401, 403, 409, 413, 422), openapi_extra={
                 "requestBody": {"required": True, "content": {
                     "application/zip": {"schema": {"type": "string",
                                                    "format": "binary"}},
                     "application/gzip": {"schema": {"type": "string",
                                                     "format": "binary"}},
                     "application/json": {"schema": FolderBody.model_json_schema()}}}})
async def install_skill(
    request: Request,
    replace: Annotated[bool, Query(description="Replace an installed skill of the same "
                                               "name (atomically).")] = False,
) -> Response:
    """Install a skill: a zip or tar.gz archive in the body (SKILL.md at its top, or
    in its one top-level folder named as the skill), or `{"path": ...}` naming a folder
    on the daemon's host (admin tokens only). Checked whole before it is published:
    a bad package installs nothing. Skills are daemon-wide: installing one needs an
    operator token without a scope."""
    who = require_right(request, "configure_host", "installing a skill")
    require_unscoped(request, "installing a skill")
    skills = runtime_of(request).skills
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or (kind not in _ARCHIVES and body[:1] == b"{"):
        try:
            folder = FolderBody.model_validate(loads_strict(body))
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                          for e in exc.errors()]) from None
        if who.role != "admin":  # (the host's files are an admin's)
            raise Forbidden("installing a skill from a path on the daemon's host needs an "
                            "admin token; upload an archive instead",
                            details={"field": "body.path"})
        info = await skills.registry.install_folder(FilePath(folder.path),
                                                    replace=folder.replace or replace)
    else:
        info = await skills.registry.install_archive(body, replace=replace)
    return model_response(SkillOut, info.to_api(), status_code=201)


@router.get("/{skill}", response_model=SkillDetail, responses=ERRORS(404, 422))
async def get_skill(skill: SkillName, request: Request) -> Response:
    """One skill: what listing shows, and its instructions."""
    registry = runtime_of(request).skills.registry
    info = registry.get(skill)
    meta = await registry.load(skill)
    return model_response(SkillDetail, {**info.to_api(), "body": meta.body})


@router.delete("/{skill}", status_code=204, responses=ERRORS(401, 403, 404, 422))
async def remove_skill(skill: SkillName, request: Request) -> Response:
    """Uninstall a skill. Agents that enable it keep the name in their settings; their
    runs leave it out (and saving such an agent is refused until the name goes)."""
    require_right(request, "configure_host", "removing a skill")
    require_unscoped(request, "removing a skill")
    await runtime_of(request).skills.registry.remove(skill)
    return Response(status_code=204)


async def _change(request: Request, name: str, skill: str, *, add: bool) -> Response:
    who = require_right(request, "use", "changing an agent")
    runtime = runtime_of(request)
    service = runtime.skills
    change = service.enable if add else service.disable
    agent = await change(name, skill, actor=who)
    return model_response(AgentOut, agent_out(runtime, agent))


@agent_router.put("/{skill}", response_model=AgentOut, responses=ERRORS(401, 404, 422))
async def enable_skill(name: str, skill: SkillName, request: Request) -> Response:
    """Enable an installed skill for the agent (nothing changes if it has it)."""
    return await _change(request, name, skill, add=True)


@agent_router.delete("/{skill}", response_model=AgentOut, responses=ERRORS(401, 404, 422))
async def disable_skill(name: str, skill: SkillName, request: Request) -> Response:
    """Disable a skill for the agent (nothing changes if it does not have it)."""
    return await _change(request, name, skill, add=False)



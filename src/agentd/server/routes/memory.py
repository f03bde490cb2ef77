"""/v1/agents/{name}/memory/blocks: an agent's core memory blocks, their history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from agentd.doors.access import require_agent
from agentd.doors.http import model_response
from agentd.memory.blocks import MAX_LIMIT, BlockChange, BlockRecord, BlockVersion
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.store.records import iso

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents/{name}/memory/blocks", tags=["memory"])

Label = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                            description="The block's label, unique per agent.")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockIn(_In):
    value: str = Field(max_length=MAX_LIMIT, description="The block's text.")
    description: str | None = Field(
        default=None, max_length=2000,
        description="What the block is for (shown to the model). Left out: kept, or "
                    "empty for a new block.")
    limit: int | None = Field(
        default=None, strict=True, ge=1, le=MAX_LIMIT,
        description="Most characters the value may have. Left out: kept, or 5000 for "
                    "a new block.")
    read_only: bool | None = Field(
        default=None, strict=True,
        description="The agent's tools may not change it (the API still may).")


class BlockPatch(_In):
    value: str | None = Field(default=None, max_length=MAX_LIMIT)
    description: str | None = Field(default=None, max_length=2000)
    limit: int | None = Field(default=None, strict=True, ge=1, le=MAX_LIMIT)
    read_only: bool | None = Field(default=None, strict=True)


class BlockRestoreIn(_In):
    version: int = Field(strict=True, ge=1, le=2**63 - 1,
                         description="The version to make current again (as a new one).")


class BlockAttachIn(_In):
    agent: str = Field(min_length=1, max_length=64,
                       description="The agent to share the block with (same label).")


class BlockOut(BaseModel):
    label: str
    description: str
    value: str
    chars: int = Field(description="Characters in the value.")
    limit: int
    read_only: bool
    version: int
    created_at: str
    updated_at: str


class BlockList(BaseModel):
    blocks: list[BlockOut]


class BlockVersionOut(BaseModel):
    version: int
    value: str
    description: str
    limit: int
    read_only: bool
    changed_by: str = Field(description="`api:<token name>` or `run:<run id>`.")
    run_id: str | None
    at: str


class BlockHistory(BaseModel):
    versions: list[BlockVersionOut]


def _out(b: BlockRecord) -> dict[str, Any]:
    return {"label": b.label, "description": b.description, "value": b.value,
            "chars": len(b.value), "limit": b.limit, "read_only": b.read_only,
            "version": b.version, "created_at": iso(b.created_at),
            "updated_at": iso(b.updated_at)}


def _version(v: BlockVersion) -> dict[str, Any]:
    return {"version": v.version, "value": v.value, "description": v.description,
            "limit": v.limit, "read_only": v.read_only, "changed_by": v.changed_by,
            "run_id": v.run_id, "at": iso(v.at)}


def _by(request: Request) -> str:
    """Who writes: the request's token's name (``api`` when auth is off)."""
    token = request.scope.get("state", {}).get("token")
    return f"api:{token}" if isinstance(token, str) else "api"


@router.get("", response_model=BlockList, responses=ERRORS(404))
async def list_blocks(name: str, request: Request) -> Response:
    """The agent's blocks in the order the model sees them."""
    blocks = await runtime_of(request).list_blocks(name)
    return model_response(BlockList, {"blocks": [_out(b) for b in blocks]})


@router.get("/{label}", response_model=BlockOut, responses=ERRORS(404, 422))
async def get_block(name: str, label: Label, request: Request) -> Response:
    return model_response(BlockOut, _out(await runtime_of(request).get_block(name, label)))


@router.put("/{label}", response_model=BlockOut, responses=ERRORS(404, 409, 422))
async def put_block(name: str, label: Label, body: BlockIn, request: Request) -> Response:
    """Create the block, or give it a new value (a new version)."""
    block = await runtime_of(request).put_block(
        name, label, value=body.value, description=body.description, limit=body.limit,
        read_only=body.read_only, by=_by(request))
    return model_response(BlockOut, _out(block))


@router.patch("/{label}", response_model=BlockOut, responses=ERRORS(404, 409, 422))
async def patch_block(name: str, label: Label, body: BlockPatch, request: Request
                      ) -> Response:
    """Change the given fields (a new version)."""
    change = BlockChange(value=body.value, description=body.description, limit=body.limit,
                         read_only=body.read_only)
    block = await runtime_of(request).patch_block(name, label, change, by=_by(request))
    return model_response(BlockOut, _out(block))


@router.delete("/{label}", status_code=204, responses=ERRORS(404, 422))
async def delete_block(name: str, label: Label, request: Request) -> Response:
    """Remove the block from the agent (deleted, with its history, once no agent has
    it)."""
    await runtime_of(request).delete_block(name, label)
    return Response(status_code=204)


@router.get("/{label}/history", response_model=BlockHistory, responses=ERRORS(404, 422))
async def block_history(name: str, label: Label, request: Request) -> Response:
    """Every version, oldest first: who wrote it, from which run."""
    versions = await runtime_of(request).block_history(name, label)
    return model_response(BlockHistory, {"versions": [_version(v) for v in versions]})


@router.post("/{label}/restore", response_model=BlockOut, responses=ERRORS(404, 409, 422))
async def restore_block(name: str, label: Label, body: BlockRestoreIn, request: Request
                        ) -> Response:
    """Make an old version current again, as a new version."""
    block = await runtime_of(request).restore_block(name, label, body.version,
                                                    by=_by(request))
    return model_response(BlockOut, _out(block))


@router.post("/{label}/attach", response_model=BlockOut, responses=ERRORS(404, 409, 422))
async def attach_block(name: str, label: Label, body: BlockAttachIn, request: Request
                       ) -> Response:
    """Share the block with another agent: both see and change the same block."""
    await require_agent(request, body.agent)
    block = await runtime_of(request).attach_block(name, label, body.agent)
    return model_response(BlockOut, _out(block))

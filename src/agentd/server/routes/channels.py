"""Channels: Telegram's webhook (public: its own secret header authenticates it) and
the state of an agent's Telegram channel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from agentd.channels.telegram import SECRET_HEADER
from agentd.server.routes._deps import ERRORS, runtime_of

__all__ = ["WEBHOOK_PREFIX", "router", "state_router"]

#: The webhook's paths, public for bearer auth (``create_app`` adds it).
WEBHOOK_PREFIX = "/v1/channels/telegram/"

router = APIRouter(prefix="/v1/channels/telegram", tags=["channels"])
state_router = APIRouter(prefix="/v1/agents/{name}/channels", tags=["channels"])


class WebhookAnswer(BaseModel):
    ok: bool
    update_id: int
    duplicate: bool = Field(description="true: this update_id was acknowledged before; "
                                        "nothing was done again.")
    status: str = Field(description="`pending` (to be handed to the agent), `skipped` "
                                    "(not a message), `refused` (chat not allowed), "
                                    "`duplicate`.")


@router.post("/{name}/webhook", response_model=WebhookAnswer,
             responses=ERRORS(400, 401, 403))
async def telegram_webhook(
        name: str, request: Request,
        secret: str | None = Header(None, alias=SECRET_HEADER,
                                    description="The webhook's secret token (the "
                                                "`secret_token` given to setWebhook).")
        ) -> Response:
    """Telegram's updates for the agent's bot (point setWebhook here, with a
    `secret_token`). Checked by the `X-Telegram-Bot-Api-Secret-Token` header (401
    without it, 403 when wrong or when the agent has no Telegram channel: the two are
    not told apart), recorded durably and answered at once; a replayed `update_id`
    answers 200 and does nothing. No bearer token: this path is public."""
    runtime = runtime_of(request)
    answer = await runtime.telegram.accept(name, secret, await request.body())
    return JSONResponse(answer)


class ChatState(BaseModel):
    chat_id: int
    session: str = Field(description="The session key (`telegram:<chat_id>`).")
    delivered_seq: int = Field(description="Every event up to this seq was delivered "
                                           "(or had nothing to deliver).")
    sent: int = Field(description="Messages sent to the chat.")
    last_error: str | None = Field(description="Why the last message given up was "
                                               "refused (cleared by the next success).")


class UpdateState(BaseModel):
    update_id: int
    chat_id: int | None
    status: str = Field(description="`pending`, `done`, `skipped`, `refused`, `failed`.")
    attempts: int
    error: str | None
    run_id: str | None
    received_at: float


class TelegramState(BaseModel):
    agent: str
    enabled: bool = Field(description="The agent's `settings.channels.telegram` is set "
                                      "and usable on this daemon.")
    worker: bool = Field(description="This node runs the channel's workers.")
    chats: list[ChatState]
    inbox: dict[str, int] = Field(description="Updates by status.")
    recent: list[UpdateState] = Field(description="The latest updates, newest first.")


@state_router.get("/telegram", response_model=TelegramState, responses=ERRORS(404))
async def telegram_state(name: str, request: Request,
                         limit: int = Query(20, ge=1, le=1000)) -> Response:
    """The agent's Telegram channel: bound chats with their delivery cursor, the
    inbox's counts by status and its latest updates."""
    state: dict[str, Any] = await runtime_of(request).telegram.state(name, limit=limit)
    return JSONResponse(state)

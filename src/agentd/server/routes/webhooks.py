"""/v1/agents/{name}/webhooks, /v1/webhooks and /v1/webhook-deliveries: an agent's
events posted, signed, to URLs the operator allows (``agentd.webhooks``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from agentd.doors.access import access_of, require_agent, require_owner, visible_agents
from agentd.doors.http import model_response, principal_of
from agentd.errors import NotFound
from agentd.security.hosts import MAX_URL
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.webhooks import WebhookIn, delivery_dict, webhook_dict
from agentd.webhooks.service import MAX_KINDS

__all__ = ["agent_router", "delivery_router", "router"]

agent_router = APIRouter(prefix="/v1/agents/{name}/webhooks", tags=["webhooks"])
router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
delivery_router = APIRouter(prefix="/v1/webhook-deliveries", tags=["webhooks"])

_ID = r"^[A-Za-z0-9_-]+$"
WebhookId = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID,
                                description="The subscription's id (`wh_...`).")]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID,
                                 description="The delivery's id (`whd_...`), the "
                                             "`webhook-id` header the receiver got.")]
Kind = Annotated[str, Field(min_length=1, max_length=100)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookBody(_In):
    url: str = Field(min_length=1, max_length=MAX_URL,
                     description="Where deliveries are POSTed: https (http only for a host "
                                 "the operator allows it for), on a host of the "
                                 "operator's `[webhooks] allow_hosts`.")
    kinds: list[Kind] = Field(default_factory=lambda: ["*"], min_length=1,
                              max_length=MAX_KINDS,
                              description="Event kinds to deliver: `run.completed`, a "
                                          "family `run.*`, or `*` (every kind).")
    description: str = Field(default="", max_length=1000)
    enabled: bool = Field(default=True, strict=True)


class WebhookPatch(_In):
    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL)
    kinds: list[Kind] | None = Field(default=None, min_length=1, max_length=MAX_KINDS)
    description: str | None = Field(default=None, max_length=1000)
    enabled: bool | None = Field(default=None, strict=True,
                                 description="false: events are not delivered (nor "
                                             "later), pending deliveries wait; true: "
                                             "delivered again from now.")


class DeliveryCounts(BaseModel):
    pending: int
    delivered: int
    failed: int


class WebhookOut(BaseModel):
    id: str
    agent: str
    url: str
    kinds: list[str]
    description: str
    enabled: bool
    created_at: str
    updated_at: str
    secret: str | None = Field(default=None, description="The signing secret (`whsec_` + "
                                                         "base64): only in the answer "
                                                         "that made or rotated it.")
    deliveries: DeliveryCounts | None = Field(default=None, description="Deliveries by "
                                                                        "status (GET of "
                                                                        "one).")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]
    next_after: str | None = Field(description="Pass as `after` for the next page.")


class DeliveryOut(BaseModel):
    id: str = Field(description="The delivery id: the `webhook-id` header, the same on "
                                "every attempt and replay.")
    webhook_id: str
    kind: str
    seq: int | None = Field(description="The event's seq in its session (null: a ping).")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str | None
    last_status: int | None = Field(description="The HTTP status of the last attempt.")
    last_error: str | None
    last_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    payload: dict[str, Any] | None = Field(default=None, description="The body sent "
                                                                     "(GET of one).")


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_before: str | None = Field(description="Pass as `before` for the next page.")


async def _own(request: Request, webhook_id: str) -> None:
    """404 (as for a subscription that does not exist) when its agent is outside the
    token's scope; nothing is read for an unscoped token."""
    if access_of(request.scope).everything:
        return
    rec = await runtime_of(request).webhooks.get(webhook_id)
    await require_owner(request, rec.agent, NotFound(
        f"webhook {webhook_id!r} not found", code="webhook_not_found"))


async def _own_delivery(request: Request, delivery_id: str) -> None:
    """404 (as for a delivery that does not exist) when its subscription's agent is
    outside the token's scope."""
    if access_of(request.scope).everything:
        return
    service = runtime_of(request).webhooks
    rec = await service.delivery(delivery_id)
    hook = await service.get(rec.webhook_id)
    await require_owner(request, hook.agent, NotFound(
        f"delivery {delivery_id!r} not found", code="delivery_not_found"))


def _page(records: list[Any], limit: int) -> dict[str, Any]:
    return {"webhooks": [webhook_dict(r) for r in records],
            "next_after": records[-1].id if len(records) == limit else None}


@agent_router.post("", status_code=201, response_model=WebhookOut,
                   responses=ERRORS(403, 404, 409, 422))
async def create_webhook(name: str, body: WebhookBody, request: Request) -> Response:
    """Subscribe a URL to the agent's events. The answer holds the signing `secret`,
    shown this once. Refused (nothing stored) with 422 naming `url` when the operator
    does not allow its host (or webhooks are off), plain http for a host not allowed
    it, or an address the host may not reach (private, the daemon's own port); 422
    naming `kinds` for an unknown kind; 409 `webhook_limit` at the agent's maximum."""
    service = runtime_of(request).webhooks
    rec = await service.create(name, WebhookIn(url=body.url, kinds=tuple(body.kinds),
                                               description=body.description,
                                               enabled=body.enabled),
                               actor=principal_of(request.scope))
    return model_response(WebhookOut, webhook_dict(rec, secret=True), 201)


@agent_router.get("", response_model=WebhookList, responses=ERRORS(404, 422))
async def list_agent_webhooks(
    name: str, request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The agent's subscriptions, oldest first (secrets are never shown again)."""
    records = await runtime_of(request).webhooks.list_all(agent=name, after=after, limit=limit)
    return model_response(WebhookList, _page(records, limit))


@router.get("", response_model=WebhookList, responses=ERRORS(404, 422))
async def list_webhooks(
    request: Request,
    agent: Annotated[str | None, Query(max_length=256, description="Only this agent's "
                                                                   "(404 if unknown).")
                     ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Subscriptions across agents, oldest first, a page at a time."""
    if agent is not None:
        await require_agent(request, agent)
    visible = None if agent is not None else await visible_agents(request)
    records = await runtime_of(request).webhooks.list_all(
        agent=agent, after=after, limit=limit,
        agent_ids=None if visible is None else [a.id for a in visible])
    return model_response(WebhookList, _page(records, limit))


@router.get("/{webhook_id}", response_model=WebhookOut, responses=ERRORS(404, 422))
async def get_webhook(webhook_id: WebhookId, request: Request) -> Response:
    await _own(request, webhook_id)
    service = runtime_of(request).webhooks
    rec = await service.get(webhook_id)
    return model_response(WebhookOut, webhook_dict(rec, counts=await service.counts(rec.id)))


@router.patch("/{webhook_id}", response_model=WebhookOut,
              responses=ERRORS(403, 404, 422))
async def patch_webhook(webhook_id: WebhookId, body: WebhookPatch, request: Request
                        ) -> Response:
    """Change the URL (checked as on creation), kinds, description or `enabled`."""
    change = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    await _own(request, webhook_id)
    service = runtime_of(request).webhooks
    rec = await service.update(webhook_id, change, actor=principal_of(request.scope)
                               ) if change else (
        await service.get(webhook_id))
    return model_response(WebhookOut, webhook_dict(rec))


@router.delete("/{webhook_id}", status_code=204, responses=ERRORS(404, 422))
async def delete_webhook(webhook_id: WebhookId, request: Request) -> Response:
    """The subscription and its deliveries (pending ones are not sent)."""
    await _own(request, webhook_id)
    await runtime_of(request).webhooks.delete(webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookOut,
             responses=ERRORS(404, 422))
async def rotate_secret(webhook_id: WebhookId, request: Request) -> Response:
    """A new signing secret, shown this once; the old one signs nothing from now on."""
    await _own(request, webhook_id)
    rec = await runtime_of(request).webhooks.rotate(webhook_id)
    return model_response(WebhookOut, webhook_dict(rec, secret=True))


@router.post("/{webhook_id}/ping", status_code=202, response_model=DeliveryOut,
             responses=ERRORS(404, 422))
async def ping_webhook(webhook_id: WebhookId, request: Request) -> Response:
    """Queue a test delivery (kind `webhook.ping`, `event` null), sent and retried like
    any other; follow it at `GET /v1/webhook-deliveries/{id}`."""
    await _own(request, webhook_id)
    rec = await runtime_of(request).webhooks.ping(webhook_id)
    return model_response(DeliveryOut, delivery_dict(rec), 202)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList,
            responses=ERRORS(404, 422))
async def list_deliveries(
    webhook_id: WebhookId, request: Request,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The subscription's deliveries, newest first, a page at a time."""
    await _own(request, webhook_id)
    records = await runtime_of(request).webhooks.deliveries(webhook_id, status=status,
                                                            before=before, limit=limit)
    return model_response(DeliveryList, {
        "deliveries": [delivery_dict(r) for r in records],
        "next_before": records[-1].id if len(records) == limit else None})


@delivery_router.get("/{delivery_id}", response_model=DeliveryOut,
                     responses=ERRORS(404, 422))
async def get_delivery(delivery_id: DeliveryId, request: Request) -> Response:
    """One delivery, with the body it sends (`payload`)."""
    await _own_delivery(request, delivery_id)
    rec = await runtime_of(request).webhooks.delivery(delivery_id)
    return model_response(DeliveryOut, delivery_dict(rec, payload=True))


@delivery_router.post("/{delivery_id}/replay", status_code=202, response_model=DeliveryOut,
                      responses=ERRORS(404, 422))
async def replay_delivery(delivery_id: DeliveryId, request: Request) -> Response:
    """Send the delivery again now (same id, same body, a fresh signature and timestamp),
    whatever its status, with the daemon's `max_attempts` more tries."""
    await _own_delivery(request, delivery_id)
    rec = await runtime_of(request).webhooks.replay(delivery_id)
    return model_response(DeliveryOut, delivery_dict(rec), 202)

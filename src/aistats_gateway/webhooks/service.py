"""Webhooks: a persisted outbox keyed by subject, Standard Webhooks signatures, at-least-once delivery.

Each domain registers its subject kind and event names once (``register_events("video", …)``,
later ``"batch"``), and validates a caller's subscription with :func:`subscription` (url through
the SSRF guard, secret, events of that kind). Events are written to ``webhook_deliveries`` when
they happen — one row per subject ``(kind, id)`` and event key, so an event is never queued twice.
The job engine delivers due rows: a POST signed with both the Standard Webhooks and the Phaseo
header families (``webhooks/signing.py``), retried with backoff on errors, timeouts and non-2xx answers.
Delivery never blocks the job itself. Targets pass the SSRF guard (https only, no private,
loopback, link-local or metadata addresses) unless the operator allows local targets.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.db.base import utcnow
from aistats_gateway.http import ssrf
from aistats_gateway.jobs import lease as leases
from aistats_gateway.jobs.lease import LeaseTable
from aistats_gateway.webhooks import signing
from aistats_gateway.webhooks.tables import WebhookDelivery

log = logging.getLogger("aistats_gateway.webhooks")

SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Subject:
    """What an event is about: an operation's kind (``video``, ``batch`` …) and id."""

    kind: str
    id: str


@dataclass(frozen=True)
class EventSet:
    events: tuple[str, ...]  # every event name of the kind, e.g. video.created … video.expired
    defaults: tuple[str, ...]  # what a subscription without ``events`` receives


_KINDS: dict[str, EventSet] = {}


def register_events(kind: str, events: tuple[str, ...], defaults: tuple[str, ...]) -> None:
    """Declare a subject kind's event names (each ``<kind>.<name>``) and its default subscription."""
    wrong = [e for e in (*events, *defaults) if not e.startswith(kind + ".")]
    if wrong or not set(defaults) <= set(events):
        raise ValueError(f"events of {kind!r} must be named {kind}.* and defaults among them: {wrong or defaults}")
    _KINDS[kind] = EventSet(tuple(events), tuple(defaults))


def events_of(kind: str) -> EventSet:
    got = _KINDS.get(kind)
    if got is None:
        raise LookupError(f"no webhook events registered for {kind!r}")
    return got


class SubscriptionError(Exception):
    """A subscription the gateway refuses; the HTTP layer answers 400 with ``param`` and ``code``."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The key bytes, decoded exactly as the ``standardwebhooks`` package decodes a secret string."""
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw + "==")


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass
class WebhookConfig:
    policy: ssrf.GuardPolicy
    schedule: tuple[float, ...]  # delays before retry 1, 2, …; attempts = len + 1
    timeout: float = 10.0


def policy_for(allow_local: bool, allowed_hosts: frozenset[str] = frozenset()) -> ssrf.GuardPolicy:
    if allow_local:
        return ssrf.GuardPolicy(schemes=frozenset({"https", "http"}),
                                allowed_hosts=allowed_hosts | {"127.0.0.1", "localhost", "::1"})
    return ssrf.GuardPolicy(allowed_hosts=allowed_hosts)


async def check_target(url: str, cfg: WebhookConfig) -> None:
    await ssrf.check_target(url, cfg.policy)


async def subscription(kind: str, url: str, secret: str | None, events: list[str] | None,
                       cfg: WebhookConfig | None, *, param: str = "webhook") -> tuple[dict[str, Any], str | None]:
    """Validate a caller's subscription to ``kind``'s events. Returns the stored form
    ``{url, secret, events}`` and, when the caller gave no secret, the generated one (shown once).
    Raises SubscriptionError naming ``<param>.url`` / ``.secret`` / ``.events``."""
    known = events_of(kind)
    if cfg is not None:
        try:
            await check_target(url, cfg)
        except ssrf.URLRejected as e:
            raise SubscriptionError(f"Cannot use {param}.url: {e.reason}", f"{param}.url", e.code) from None
    generated = None
    if not secret:
        secret = generated = new_secret()
    if (why := signing.check_secret(secret)) is not None:
        raise SubscriptionError(f"{param}.secret {why}; omit it and the gateway generates one.", f"{param}.secret")
    chosen = list(dict.fromkeys(events)) if events else list(known.defaults)
    unknown = [e for e in chosen if e not in known.events]
    if unknown:
        raise SubscriptionError(f"Unknown {param}.events {', '.join(unknown)}; allowed: {', '.join(known.events)}.",
                                f"{param}.events")
    return {"url": url, "secret": secret, "events": chosen}, generated


def progress_bucket(progress: int) -> int | None:
    """10 % steps: 10, 20 … 90 (0 and 100 are covered by created/completed)."""
    bucket = (progress // 10) * 10
    return bucket if 10 <= bucket <= 90 else None


def subscribes(webhook: dict[str, Any] | None, kind: str, event_type: str) -> bool:
    """True when the stored subscription ``webhook`` receives ``event_type``."""
    if not webhook or not webhook.get("url"):
        return False
    return event_type in (webhook.get("events") or events_of(kind).defaults)


async def enqueue(s: AsyncSession, *, subject: Subject, workspace_id: str, webhook: dict[str, Any] | None,
                  event_type: str, event_key: str | None, data: dict[str, Any]) -> str | None:
    """Queue one event about ``subject`` if its subscription ``webhook`` receives it; the delivery id,
    or None when not subscribed or already queued. ``data`` is the event body's ``data``."""
    if not webhook or not webhook.get("url"):
        return None
    if event_type not in events_of(subject.kind).events:
        raise ValueError(f"{event_type!r} is not a registered {subject.kind} event")
    events = webhook.get("events") or list(events_of(subject.kind).defaults)
    if event_type not in events:
        return None
    now = utcnow()
    msg_id = "msg_" + secrets.token_hex(12)
    body = orjson.dumps({"type": event_type, "timestamp": now.isoformat().replace("+00:00", "Z"),
                         "data": data}).decode()
    try:
        async with s.begin_nested():
            s.add(WebhookDelivery(id=msg_id, subject_kind=subject.kind, subject_id=subject.id,
                                  workspace_id=workspace_id, event_type=event_type,
                                  event_key=event_key or event_type, url=webhook["url"],
                                  secret=webhook.get("secret") or "", payload=body, next_attempt_at=now))
    except IntegrityError:
        return None
    return msg_id


_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]
# The outbox as a leased table: no owner column, so a lease is fenced by its own deadline.
WEBHOOK_LEASE = LeaseTable(kind="webhook", table=_deliveries, active=("pending",), terminal=("delivered", "failed"),
                           owner_col=None, due_col="next_attempt_at", group_col="workspace_id")
LEASE_OWNER = "webhooks"


def lease_seconds(cfg: WebhookConfig) -> float:
    return cfg.timeout + 30


async def due(sessions: async_sessionmaker[AsyncSession], limit: int) -> list[str]:
    return await leases.due_ids(sessions, WEBHOOK_LEASE, limit)


async def deliver(sessions: async_sessionmaker[AsyncSession], client: httpx.AsyncClient, cfg: WebhookConfig,
                  delivery_id: str) -> float | None:
    """Claim one delivery and make one attempt. Seconds until the next attempt, or None when done
    (delivered or failed) or not ours."""
    lease = await leases.claim(sessions, WEBHOOK_LEASE, delivery_id, LEASE_OWNER, lease_seconds(cfg))
    if lease is None:
        return None
    return await leases.run_leased(sessions, lease, lambda held: attempt(sessions, client, cfg, held))


async def attempt(sessions: async_sessionmaker[AsyncSession], client: httpx.AsyncClient, cfg: WebhookConfig,
                  lease: leases.Lease) -> float | None:
    """One attempt of a delivery this process has leased; the outcome is written only while the
    lease is still ours (``run_leased`` then releases it and sets the next attempt time)."""
    delivery_id = lease.item_id
    async with leases.engine_of(sessions).connect() as conn:
        row = (await conn.execute(select(_deliveries.c.url, _deliveries.c.secret, _deliveries.c.payload,
                                         _deliveries.c.attempts, _deliveries.c.history,
                                         _deliveries.c.event_type, _deliveries.c.event_key)
                                  .where(_deliveries.c.id == delivery_id))).first()
    if row is None:
        return None
    url, secret, body, attempts, history = row.url, row.secret, row.payload, row.attempts, list(row.history or [])
    event_type, event_key = row.event_type, row.event_key
    started = time.monotonic()
    ts = int(time.time())
    status_code: int | None = None
    error: str | None = None
    try:
        ips = await ssrf.check_url(url, cfg.policy)
        headers = signing.delivery_headers(secret=secret, delivery_id=delivery_id, event_type=event_type,
                                           event_key=event_key, attempt=attempts + 1,
                                           max_attempts=len(cfg.schedule) + 1, timestamp=ts, body=body.encode())
        request = ssrf.pinned_request("POST", url, ips[0], headers=headers, content=body.encode(),
                                      timeout=cfg.timeout)
        resp = await client.send(request, follow_redirects=False)
        await resp.aclose()
        status_code = resp.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except ssrf.URLRejected as e:
        error = f"target refused: {e.reason}"
    except httpx.TimeoutException:
        error = "timeout"
    except httpx.HTTPError as e:
        error = f"{e.__class__.__name__}: {e}"
    except (httpx.InvalidURL, ValueError, UnicodeError, OverflowError) as e:  # not HTTPErrors (issue 9 #3)
        error = f"target refused: redirect_not_allowed: the URL is not usable: {e}"
    except Exception as e:
        log.warning("webhook attempt raised", extra={"delivery_id": delivery_id, "error": repr(e)})
        error = f"{e.__class__.__name__}: {e}"
    attempts += 1
    history.append({"attempt": attempts, "at": ts, "status_code": status_code, "error": error,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1)})
    values: dict[str, Any] = {"attempts": attempts, "history": history[-20:]}
    delay: float | None = None
    if error is None:
        values.update(status="delivered", delivered_at=utcnow())
    elif attempts > len(cfg.schedule):
        values.update(status="failed")
        log.warning("webhook delivery gave up", extra={"delivery_id": delivery_id, "attempts": attempts})
    else:
        delay = cfg.schedule[attempts - 1]
        values["next_attempt_at"] = utcnow() + dt.timedelta(seconds=delay)
    async with leases.engine_of(sessions).begin() as conn:
        await conn.execute(update(_deliveries).where(lease.held()).values(values))
    return delay


async def for_subject(s: AsyncSession, subject: Subject) -> list[dict[str, Any]]:
    """The deliveries of one subject's events, oldest first (for the product's object)."""
    rows = (await s.execute(select(WebhookDelivery).where(
        WebhookDelivery.subject_kind == subject.kind, WebhookDelivery.subject_id == subject.id)
        .order_by(WebhookDelivery.created_at))).scalars()
    return [{"id": d.id, "event": d.event_type, "status": d.status, "attempts": d.attempts,
             "next_attempt_at": int(d.next_attempt_at.timestamp()) if d.status == "pending" else None,
             "delivered_at": int(d.delivered_at.timestamp()) if d.delivered_at else None,
             "history": list(d.history or [])[-10:]} for d in rows]

"""A fast path in front of the framework for ``GET /v1/videos/{id}`` of a finished job.

Pure ASGI, inside the gateway middleware (request id, access log and metrics still apply). It
answers only when everything is certain: a well-formed key whose row says valid, not revoked and
without a per-minute limit (those requests take the normal path, which counts them); the job's
row (owner, status, deleted_at, updated_at read on the lean path, so the database stays the truth
in every process) matching a cached rendering (``videos.cache``). Anything else — a miss, an
unknown or revoked key, a query string, a HEAD — falls through to the FastAPI route, which gives
the same answer and the proper errors. A revoked key therefore stops working at once here too.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from aistats_gateway.auth import keys
from aistats_gateway.auth.tables import ApiKey

_PATH = re.compile(r"^/v1/videos/([A-Za-z0-9_-]{1,64})$")
_ROUTE = type("Route", (), {"path": "/v1/videos/{video_id}"})()  # the label the metrics use


class FastVideoGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("query_string"):
            m = _PATH.match(scope["path"])
            if m is not None and await self._try(scope, send, m.group(1)):
                return
        await self.app(scope, receive, send)

    async def _try(self, scope: Scope, send: Send, video_id: str) -> bool:
        app: Any = scope.get("app")
        gw = getattr(getattr(app, "state", None), "gateway", None)
        if gw is None or gw.rendered_jobs is None or gw.reader is None:
            return False
        auth = host = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == b"host":
                host = v
        if auth is None or host is None or auth[:7].lower() != b"bearer ":
            return False
        parsed = keys.parse(auth[7:].decode("latin-1").strip())
        if parsed is None:
            return False
        rows = await gw.reader.rows_by(ApiKey.__table__, "id", parsed.key_id)
        if not rows:
            return False
        key = rows[0]
        if key["revoked_at"] is not None or key["rpm_limit"] is not None:
            return False
        if not keys.verify(gw.settings.pepper, parsed.secret, key["secret_hash"]):
            return False
        from aistats_gateway.videos import service

        found = await service.stamp_of(gw.reader, video_id)
        if found is None or found[0].workspace_id != key["workspace_id"] or not gw.rendered_jobs.cacheable(*found):
            return False
        base = gw.settings.public_base_url or f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}" \
            f"{scope.get('root_path', '')}".rstrip("/")
        body = gw.rendered_jobs.get(video_id, found[0], base)
        if body is None:
            return False
        scope.setdefault("state", {})["key_id"] = parsed.key_id
        scope["route"] = _ROUTE
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"),
            (b"openai-poll-after-ms", b"1000")]})
        await send({"type": "http.response.body", "body": body})
        return True

"""``/v1/video/generations…``: the original's alias of every ``/v1/videos…`` route.

Each alias route calls the same endpoint function (same auth, parsing and answers); aliases are
left out of /openapi.json so each operation is documented once, under ``/v1/videos``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

SOURCE = "/v1/videos"
ALIAS = "/v1/video/generations"


def alias_router(*routers: APIRouter, source: str = SOURCE, alias: str = ALIAS) -> APIRouter:
    """A router mirroring, in order, every route of ``routers`` under ``source`` at ``alias``.
    Pass the routers in the order the app includes them (fixed paths before ``{video_id}``)."""
    out = APIRouter()
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not (route.path == source or route.path.startswith(source + "/")):
                continue
            out.add_api_route(
                alias + route.path[len(source):], route.endpoint, methods=sorted(route.methods or ()),
                response_model=route.response_model, status_code=route.status_code,
                response_class=route.response_class, name=f"{route.name}_alias", include_in_schema=False,
            )
    return out

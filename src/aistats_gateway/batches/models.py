"""``GET /v1/batches/models``: every model that can be batched, with each provider's modes.

* With a ``params`` filter the answer is the catalogue's batch entries (offers listing the ``batch``
  endpoint, i.e. a provider batch API) exactly as the catalogue renders them: the seed's example.
* Without one, those entries come first, each provider marked ``modes: ["native", "gateway"]``
  when the gateway drives that provider's batch API here, else ``["gateway"]``; then every other
  active model the gateway can call on a batchable endpoint (images and audio included, where the
  offer's adapter and price allow: ``execute_media.batch_endpoints``), in gateway mode, with each
  provider's endpoints, native endpoints and windows.
"""

from __future__ import annotations

from typing import Any

import orjson

from aistats_gateway.batches import execute_media, windows
from aistats_gateway.batches.native import native_endpoints
from aistats_gateway.catalogue import queries
from aistats_gateway.catalogue import service as catalogue

KINDS = {"chat.completions": ("/v1/chat/completions", "/v1/responses", "/v1/messages"),
         "embeddings": ("/v1/embeddings",), "moderations": ("/v1/moderations",)}
MEDIA_KINDS = ("images.generations", "audio.speech", "audio.transcription")  # endpoints: execute_media


def _gateway_entry(e: Any, providers: list[dict[str, Any]]) -> dict[str, Any]:
    endpoints = list(dict.fromkeys(ep for p in providers for ep in p["endpoints"]))
    accepted = list(dict.fromkeys(w for p in providers for w in p["completion_windows"]))
    ids = [p["id"] for p in providers]
    detail = {"endpoint": {"supported": True, "values": endpoints, "providers": ids},
              "completion_window": {"supported": True, "values": accepted, "providers": ids}}
    names = ["endpoint", "completion_window"]
    return {"model": e.spec.model_id, "name": e.spec.name, "status": e.spec.status,
            "input_types": e.spec.input_types, "output_types": e.spec.output_types,
            "supported_params": names, "supported_parameters": names,
            "supported_params_detail": detail, "supported_parameters_detail": detail,
            "providers": providers, "pricing": {}, "modes": ["gateway"]}


def render(snap: catalogue.Snapshot, params: list[str], gateway: tuple[str, ...] = windows.DEFAULT) -> bytes:
    key = ("batches-models", tuple(params), gateway)
    cached = snap.cache.get(key)
    if cached is not None:
        return cached
    from aistats_gateway.providers import registry

    if params:
        return queries.capability_list(snap, "batch", params)
    body = orjson.loads(queries.capability_list(snap, "batch", params))
    listed = set()
    for m in body["data"]:
        listed.add(m["model"])
        for p in m["providers"]:
            values = (p.get("supported_parameters_detail") or {}).get("endpoint", {}).get("values") or []
            native = [v for v in values if v in native_endpoints(p["id"])]
            drives = native or (not values and native_endpoints(p["id"]))
            p["modes"] = ["native", "gateway"] if drives else ["gateway"]
    for e in snap.models:
        if e.spec.status != "active" or e.spec.model_id in listed:
            continue
        providers = []
        for o in e.offers:
            eps = [ep for kind, group in KINDS.items() if kind in o.spec.endpoints
                   and registry.adapter_for(o.provider_id, kind) is not None for ep in group]
            eps += [ep for kind in MEDIA_KINDS for ep in execute_media.batch_endpoints(o, kind)]
            if eps:
                native = [ep for ep in eps if ep in native_endpoints(o.provider_id)]
                providers.append({"id": o.provider_id, "provider_model_slug": o.spec.provider_model_slug,
                                  "modes": ["native", "gateway"] if native else ["gateway"],
                                  "endpoints": eps, "native_endpoints": native,
                                  "completion_windows": windows.advertised(o, gateway), "is_active_gateway":
                                  any(catalogue.is_active(o, k) for k in (*KINDS, *MEDIA_KINDS)
                                      if k in o.spec.endpoints)})
        if providers:
            body["data"].append(_gateway_entry(e, providers))
    out = orjson.dumps(body)
    snap.cache[key] = out
    return out

"""Validating a create request against the catalogue and choosing the providers that can run it.

Every failure is a 400 in the OpenAI error shape with ``param`` set, and the message lists the
allowed values where there are some. Model resolution and the ``provider`` object are
``routing.plan``'s (its ``RoutingError`` is answered as a 400 by the HTTP layer); the video
parameters then narrow the planned offers, and ``allow_fallbacks=false`` keeps only the first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aistats_gateway import routing
from aistats_gateway.catalogue.schema import Endpoint, ParameterDetail
from aistats_gateway.catalogue.service import ModelEntry, ProviderOffer, Snapshot
from aistats_gateway.http.errors import bad_request
from aistats_gateway.media import render
from aistats_gateway.videos.schemas import VideoCreateRequest

ENDPOINT: Endpoint = "video.generation"
routing.describe_endpoint(ENDPOINT, "video generation", "/v1/videos/models")
RESOLUTIONS = ("480p", "720p", "1080p", "1K", "2K", "4K")
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_RATIO = re.compile(r"^(\d{1,3}):(\d{1,3})$")
# provider_params keys a validated top-level field controls (compared without '-'/'_', lowercased).
CONTROLLED_KEYS = frozenset({
    "prompt", "model", "duration", "durationseconds", "seconds", "size", "resolution", "aspectratio", "ratio",
    "samplecount", "n", "numberofvideos", "generateaudio", "audio", "seed", "negativeprompt", "enhanceprompt",
    "persongeneration", "compressionquality", "resizemode", "image", "imageurl", "imageurls", "firstframe",
    "lastframe", "firstframeimage", "lastframeimage", "inputreference", "inputreferences", "referenceimages",
    "promptimage", "callbackurl", "webhook", "webhookurl", "content", "instances", "parameters",
})


# Every spelling of the duration a create request may use (the catalogue's aliases of "duration").
DURATION_SPELLINGS = ("duration", "seconds", "duration_seconds")
_RESOLUTION_KEYS = frozenset(r.lower() for r in RESOLUTIONS)


def _one_spelling(req: VideoCreateRequest, names: tuple[str, ...]) -> tuple[str, Any]:
    """The (name, value) of the spellings given; 400 when two of them disagree."""
    given = [(n, getattr(req, n)) for n in names if getattr(req, n) is not None]
    for n, v in given[1:]:
        if v != given[0][1]:
            raise bad_request(f"'{given[0][0]}' ({_show(given[0][1])}) and '{n}' ({_show(v)}) disagree; send one "
                              "of them.", n, "conflicting_parameters")
    return given[0] if given else (names[0], None)


def fold_aliases(snap: Snapshot, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the catalogue's other aliases of the model's video parameters renamed to the
    parameter (spellings that are request fields, such as seconds or size, are left to ``plan``);
    400 when an alias and its parameter disagree."""
    entry = snap.resolve(data["model"]) if isinstance(data.get("model"), str) else None
    if entry is None:
        return data
    out = dict(data)
    for o in entry.offers:
        for name, detail in (o.spec.parameters.get(ENDPOINT) or {}).items():
            for alias in detail.aliases:
                if alias not in out or alias in VideoCreateRequest.model_fields:
                    continue
                value = out.pop(alias)
                if name in out and out[name] != value:
                    raise bad_request(f"'{name}' ({_show(out[name])}) and '{alias}' ({_show(value)}) disagree; send "
                                      "one of them.", alias, "conflicting_parameters")
                out[name] = value
    return out


@dataclass
class Plan:
    """A validated request: the model, the ordered providers to try and the normalised values."""

    model: ModelEntry
    offers: list[ProviderOffer]
    prompt: str
    duration: int | None
    width: int
    height: int
    resolution: str | None
    aspect_ratio: str | None
    size: str | None
    values: dict[str, Any] = field(default_factory=dict)  # other validated parameters
    provider_params: dict[str, Any] = field(default_factory=dict)


def _norm_resolution(value: str) -> str:
    for r in RESOLUTIONS:
        if value.lower() == r.lower():
            return r
    raise bad_request(f"Invalid resolution {value!r}; allowed: {', '.join(RESOLUTIONS)}.", "resolution")


def size_class(width: int, height: int) -> str:
    """The gateway resolution a WxH size falls in (by its short side)."""
    short = min(width, height)
    for limit, label in ((480, "480p"), (720, "720p"), (1080, "1080p"), (1440, "2K")):
        if short <= limit:
            return label
    return "4K"


def _ratio_close(width: int, height: int, ratio: str) -> bool:
    m = _RATIO.match(str(ratio))
    if not m or int(m[2]) == 0:
        return False
    return math.isclose(width / height, int(m[1]) / int(m[2]), rel_tol=0.03)


def _show(value: Any) -> str:
    """A value as the caller wrote it in JSON (true, not True)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fmt(values: list[Any]) -> str:
    return ", ".join(_show(v) for v in values)


def check_value(name: str, value: Any, detail: ParameterDetail) -> str | None:
    """None when ``value`` is allowed by ``detail``; otherwise why not."""
    if not detail.supported:
        return "is not supported"
    if detail.values is not None:
        allowed = [str(v).lower() for v in detail.values]
        if str(value).lower() not in allowed and value not in detail.values:
            return f"must be one of: {_fmt(detail.values)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = detail.minimum, detail.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                return f"must be between {low:g} and {high:g}"
            return f"must be at least {low:g}" if low is not None else f"must be at most {high:g}"
    return None


def _detail(offer: ProviderOffer, name: str) -> ParameterDetail | None:
    params = offer.spec.parameters.get(ENDPOINT) or {}
    if name in params:
        return params[name]
    for detail in params.values():
        if name in detail.aliases:
            return detail
    return None


def resolve_model(snap: Snapshot, model: str) -> ModelEntry:
    """The model a video request names (an id, alias, provider slug or ``provider:org/model``)."""
    return routing.resolve(snap, model, ENDPOINT)


def _filter(offers: list[ProviderOffer], name: str, value: Any, param: str) -> list[ProviderOffer]:
    """Keep the offers that accept ``value`` for ``name``; 400 with the reasons when none does."""
    keep, reasons = [], []
    for o in offers:
        d = _detail(o, name)
        if d is None:
            if (isinstance(value, bool) and value is False) or (name == "sample_count" and value == 1):
                keep.append(o)  # what a provider without the option does anyway
                continue
            reasons.append(f"{o.provider_id}: not supported")
            continue
        why = check_value(name, value, d)
        if why is None:
            keep.append(o)
        else:
            reasons.append(f"{o.provider_id}: {why}")
    if not keep:
        raise bad_request(f"Invalid value for '{param}' ({json.dumps(value)}): " + "; ".join(reasons) + ".", param,
                          "unsupported_value")
    return keep


def _check_provider_params(pp: dict[str, Any] | None) -> dict[str, Any]:
    if not pp:
        return {}
    for k in pp:
        if k.replace("-", "").replace("_", "").lower() in CONTROLLED_KEYS:
            raise bad_request(f"'{k}' must be supplied through a validated top-level video field, not "
                              "provider_params.", f"provider_params.{k}", "controlled_parameter")
    return dict(pp)


def _set_parameters(req: VideoCreateRequest) -> list[str]:
    """The catalogue parameter names the request sets (for ``provider.require_parameters``)."""
    names = [n for n in ("duration", "resolution", "aspect_ratio") if getattr(req, n) is not None]
    if req.seconds is not None:
        names.append("duration")
    if req.size is not None:
        names += ["resolution", "aspect_ratio"]
    names += [n for n in ("seed", "sample_count", "negative_prompt", "generate_audio", "enhance_prompt",
                          "compression_quality", "person_generation", "resize_mode") if getattr(req, n) is not None]
    if req.input_references or req.input_reference:
        names.append("input_references")
    return names


def plan(snap: Snapshot, req: VideoCreateRequest, *, has_image: bool,
         health: routing.CircuitBreaker | None = None) -> Plan:
    entry = resolve_model(snap, req.model)
    if not req.prompt.strip() and not has_image:
        raise bad_request("'prompt' must not be empty unless an image reference is given.", "prompt",
                          "missing_required_parameter")
    dparam, duration = _one_spelling(req, DURATION_SPELLINGS)
    size, resolution_in = req.size, req.resolution
    if size is not None and size.lower() in _RESOLUTION_KEYS:  # size is also an alias of resolution
        if resolution_in is not None and resolution_in.lower() != size.lower():
            raise bad_request(f"'resolution' ({resolution_in!r}) and 'size' ({size!r}) disagree; send one of them.",
                              "size", "conflicting_parameters")
        size, resolution_in = None, size
    if size is not None and (resolution_in is not None or req.aspect_ratio is not None):
        raise bad_request("'size' cannot be combined with 'resolution' or 'aspect_ratio'.", "size",
                          "conflicting_parameters")
    resolution = _norm_resolution(resolution_in) if resolution_in is not None else None
    aspect = req.aspect_ratio
    if aspect is not None:
        m = _RATIO.match(aspect)
        if not m or int(m[1]) == 0 or int(m[2]) == 0:
            raise bad_request(f"Invalid aspect_ratio {aspect!r}; use W:H such as 16:9.", "aspect_ratio")
    size_wh: tuple[int, int] | None = None
    if size is not None:  # "" is an invalid size, not a missing one
        m = _SIZE.match(size.lower())
        if not m or not (16 <= int(m[1]) <= 4096 and 16 <= int(m[2]) <= 4096):
            raise bad_request(f"Invalid size {size!r}; use WxH such as 1280x720 (16..4096) or a resolution "
                              f"({', '.join(RESOLUTIONS)}).", "size")
        size_wh = (int(m[1]), int(m[2]))
    pp = _check_provider_params(req.provider_params)

    price_context = {"resolution": resolution or (size_class(*size_wh) if size_wh else None),
                     "audio": bool(req.generate_audio), "size": req.size}
    offers = routing.plan(snap, req.model, ENDPOINT, req.provider, params=_set_parameters(req),
                          price_context=price_context, health=health).offers
    if duration is not None:
        offers = _filter(offers, "duration", duration, dparam)
    if size_wh is not None:
        w, h = size_wh
        offers = _filter(offers, "resolution", size_class(w, h), "size")
        offers = _filter_ratio(offers, w, h)
    if resolution is not None:
        offers = _filter(offers, "resolution", resolution, "resolution")
    if aspect is not None:
        offers = _filter(offers, "aspect_ratio", aspect, "aspect_ratio")
    values: dict[str, Any] = {}
    for name in ("seed", "sample_count", "negative_prompt", "generate_audio", "enhance_prompt", "compression_quality",
                 "person_generation", "resize_mode"):
        value = getattr(req, name)
        if value is not None:
            offers = _filter(offers, name, value, name)
            values[name] = value
    if req.input_references or req.input_reference:
        roles = [r.role for r in req.input_references or []]
        offers = _filter_references(offers, roles)

    offers = routing.candidates(offers, req.provider)
    first = offers[0]
    if duration is None:
        d = _detail(first, "duration")
        if d is not None and d.default is not None:
            duration = int(d.default)
        elif d is not None and d.values:
            duration = int(d.values[0])
        elif d is not None and d.minimum is not None:
            duration = int(d.minimum)
    if size_wh is None and resolution is None:
        d = _detail(first, "resolution")
        resolution = str(d.default) if d is not None and d.default else (
            str(d.values[0]) if d is not None and d.values else None)
    if size_wh is None and aspect is None:
        d = _detail(first, "aspect_ratio")
        aspect = str(d.default) if d is not None and d.default else (
            str(d.values[0]) if d is not None and d.values else None)
    if size_wh is not None:
        width, height = size_wh
    else:
        try:
            width, height = render.resolve_dimensions(resolution, aspect, None)
        except ValueError as e:
            raise bad_request(str(e), "resolution") from None
    return Plan(entry, offers, req.prompt, duration, width, height, resolution, aspect, size, values, pp)


def _filter_ratio(offers: list[ProviderOffer], width: int, height: int) -> list[ProviderOffer]:
    keep, reasons = [], []
    for o in offers:
        d = _detail(o, "aspect_ratio")
        if d is None or d.values is None or any(_ratio_close(width, height, v) for v in d.values):
            keep.append(o)
        else:
            reasons.append(f"{o.provider_id}: aspect ratio must be one of {_fmt(d.values)}")
    if not keep:
        raise bad_request(f"Invalid value for 'size' ({width}x{height}): " + "; ".join(reasons) + ".", "size",
                          "unsupported_value")
    return keep


def _filter_references(offers: list[ProviderOffer], roles: Sequence[str]) -> list[ProviderOffer]:
    keep, reasons = [], []
    for o in offers:
        d = _detail(o, "input_references")
        if d is None or not d.supported:
            reasons.append(f"{o.provider_id}: image references are not supported")
        elif d.values and any(r not in d.values for r in roles):
            refused = sorted({r for r in roles if r not in d.values})
            reasons.append(f"{o.provider_id}: role {_fmt(refused)} is not accepted; roles must be one of "
                           f"{_fmt(d.values)}")
        else:
            keep.append(o)
    if not keep:
        raise bad_request("Invalid 'input_references': " + "; ".join(reasons) + ".", "input_references",
                          "unsupported_value")
    return keep


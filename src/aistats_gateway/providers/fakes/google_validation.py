"""Request validation for the fake Google Veo APIs (:mod:`.google`): per-model capabilities and the
``predictLongRunning`` body checks of the Gemini API and Vertex AI (400 INVALID_ARGUMENT otherwise)."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from .google_errors import invalid
from .google_state import FakeGoogleState

COMMON_PARAMS = frozenset({"aspectRatio", "durationSeconds", "resolution", "sampleCount", "negativePrompt",
                           "enhancePrompt", "personGeneration"})
VERTEX_ONLY_PARAMS = frozenset({"generateAudio", "compressionQuality", "resizeMode", "seed", "storageUri", "fps",
                                "pubsubTopic"})
STUDIO_INSTANCE_KEYS = frozenset({"prompt", "image", "lastFrame", "video", "referenceImages"})
VERTEX_INSTANCE_KEYS = STUDIO_INSTANCE_KEYS | {"mask"}
PERSON_GENERATION = ("dont_allow", "allow_adult", "allow_all")
DIMENSIONS = {("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280), ("1080p", "16:9"): (1920, 1080),
              ("1080p", "9:16"): (1080, 1920), ("4k", "16:9"): (3840, 2160), ("4k", "9:16"): (2160, 3840)}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


@dataclass(frozen=True)
class ModelSpec:
    durations: tuple[int, ...]
    resolutions: tuple[str, ...] | None  # None: no resolution parameter (720p only)
    max_samples: int
    last_frame: bool
    reference_images: bool
    style_references: bool
    audio: bool


def model_spec(model: str) -> ModelSpec:
    if model.startswith("veo-2"):
        return ModelSpec((5, 6, 7, 8), None, 4 if model.endswith("-exp") else 2, True, model.endswith("-exp"),
                         model.endswith("-exp"), False)
    if model.startswith("veo-3.0"):
        return ModelSpec((4, 6, 8), ("720p", "1080p"), 4, False, False, False, True)
    return ModelSpec((4, 6, 8), ("720p", "1080p", "4k"), 4, True, "lite" not in model, False, True)


def _image(value: Any, where: str, api: str) -> None:
    from PIL import Image

    if not isinstance(value, dict):
        raise invalid(f"Invalid value at '{where}': expected an object.", where)
    if "gcsUri" in value:
        if api == "studio":
            raise invalid(f"Invalid JSON payload received. Unknown name \"gcsUri\" at '{where}': Cannot find field.",
                           where)
        if not str(value["gcsUri"]).startswith("gs://") or "bytesBase64Encoded" in value:
            raise invalid(f"{where}: give exactly one of bytesBase64Encoded and a gs:// gcsUri.", where)
        return
    data = value.get("bytesBase64Encoded")
    if not isinstance(data, str) or not data:
        raise invalid(f"{where}.bytesBase64Encoded is required.", where)
    mime = value.get("mimeType")
    if mime not in IMAGE_TYPES:
        raise invalid(f"{where}.mimeType must be one of {', '.join(IMAGE_TYPES)}; got {mime!r}.", where)
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except Exception:
        raise invalid(f"{where}: the image could not be decoded.", where) from None


def validate_create(api: str, model: str, body: Any, state: FakeGoogleState) -> dict[str, Any]:
    """The create body → {prompt, width, height, seconds, samples, storage_uri}; ApiError(400) otherwise."""
    spec = model_spec(model)
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    for key in body:
        if key not in ("instances", "parameters"):
            raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\": Cannot find field.", key)
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise invalid("instances must hold exactly one instance.", "instances")
    inst, params = instances[0], body.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid("parameters must be an object.", "parameters")
    allowed_inst = STUDIO_INSTANCE_KEYS if api == "studio" else VERTEX_INSTANCE_KEYS
    for key in inst:
        if key not in allowed_inst:
            raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at 'instances[0]': "
                           "Cannot find field.", f"instances[0].{key}")
    for key in params:
        if api == "studio" and key in VERTEX_ONLY_PARAMS:
            raise invalid(f"`{key}` isn't supported by this model. Please remove it or refer to the Gemini API "
                           "documentation for supported usage.", f"parameters.{key}")
        if state.reject_unknown_params and key not in COMMON_PARAMS | VERTEX_ONLY_PARAMS:
            raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at 'parameters': "
                           "Cannot find field.", f"parameters.{key}")

    prompt = inst.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise invalid("instances[0].prompt must be a string.", "instances[0].prompt")
    if "video" in inst:
        raise invalid("Video extension is not supported by this fake.", "instances[0].video")
    if "image" in inst:
        _image(inst["image"], "instances[0].image", api)
    if not (prompt or "").strip() and "image" not in inst:
        raise invalid("A text prompt is required for text-to-video.", "instances[0].prompt")
    if "lastFrame" in inst:
        if not spec.last_frame:
            raise invalid(f"lastFrame isn't supported by {model}.", "instances[0].lastFrame")
        if "image" not in inst:
            raise invalid("lastFrame needs a first frame in instances[0].image.", "instances[0].lastFrame")
        _image(inst["lastFrame"], "instances[0].lastFrame", api)
    if "referenceImages" in inst:
        refs = inst["referenceImages"]
        if not spec.reference_images:
            raise invalid(f"referenceImages isn't supported by {model}.", "instances[0].referenceImages")
        if not isinstance(refs, list) or not 1 <= len(refs) <= 3:
            raise invalid("referenceImages takes 1 to 3 images.", "instances[0].referenceImages")
        kinds = []
        for i, ref in enumerate(refs):
            where = f"instances[0].referenceImages[{i}]"
            if not isinstance(ref, dict) or set(ref) - {"image", "referenceType"}:
                raise invalid(f"{where} takes image and referenceType.", where)
            kind = ref.get("referenceType")
            if kind not in ("asset", "style"):
                raise invalid(f"{where}.referenceType must be asset or style.", f"{where}.referenceType")
            if kind == "style" and not spec.style_references:
                raise invalid(f"Style reference images aren't supported by {model}.", f"{where}.referenceType")
            kinds.append(kind)
            _image(ref.get("image"), f"{where}.image", api)
        if "style" in kinds and len(kinds) > 1:
            raise invalid("Give up to three asset images or one style image.", "instances[0].referenceImages")
    if "mask" in inst:
        raise invalid("Masks are not supported by this fake.", "instances[0].mask")

    def typed(name: str, kind: type | tuple[type, ...]) -> Any:
        value = params.get(name)
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is int)):
            raise invalid(f"Invalid value at 'parameters.{name}': expected {getattr(kind, '__name__', kind)}.",
                           f"parameters.{name}")
        return value

    seconds = typed("durationSeconds", int)
    seconds = 8 if seconds is None else seconds
    if seconds not in spec.durations:
        raise invalid(f"Unsupported durationSeconds {seconds} for {model}; supported: "
                       f"{', '.join(map(str, spec.durations))}.", "parameters.durationSeconds")
    ratio = typed("aspectRatio", str) or "16:9"
    if ratio not in ("16:9", "9:16"):
        raise invalid(f"Unsupported aspectRatio {ratio!r}; supported: 16:9, 9:16.", "parameters.aspectRatio")
    res = typed("resolution", str)
    if res is not None and spec.resolutions is None:
        raise invalid(f"resolution isn't supported by {model}.", "parameters.resolution")
    res = res or "720p"
    if spec.resolutions is not None and res not in spec.resolutions:
        raise invalid(f"Unsupported resolution {res!r} for {model}; supported: {', '.join(spec.resolutions)}.",
                       "parameters.resolution")
    if res != "720p" and seconds != 8:
        raise invalid(f"{res} output needs durationSeconds 8.", "parameters.resolution")
    if "referenceImages" in inst and seconds != 8:
        raise invalid("Reference images need durationSeconds 8.", "parameters.durationSeconds")
    samples = typed("sampleCount", int)
    samples = 1 if samples is None else samples
    if not 1 <= samples <= spec.max_samples:
        raise invalid(f"sampleCount must be between 1 and {spec.max_samples}.", "parameters.sampleCount")
    typed("negativePrompt", str)
    typed("enhancePrompt", bool)
    person = typed("personGeneration", str)
    if person is not None and person not in PERSON_GENERATION:
        raise invalid(f"Unsupported personGeneration {person!r}; supported: {', '.join(PERSON_GENERATION)}.",
                       "parameters.personGeneration")
    audio = typed("generateAudio", bool)
    if audio is not None and not spec.audio:
        raise invalid(f"generateAudio isn't supported by {model}.", "parameters.generateAudio")
    if api == "vertex" and spec.audio and audio is None and state.require_generate_audio:
        raise invalid(f"generateAudio is required for {model}.", "parameters.generateAudio")
    quality = typed("compressionQuality", str)
    if quality is not None and quality.lower() not in ("optimized", "lossless"):
        raise invalid("compressionQuality must be optimized or lossless.", "parameters.compressionQuality")
    resize = typed("resizeMode", str)
    if resize is not None and resize.lower() not in ("pad", "crop"):
        raise invalid("resizeMode must be pad or crop.", "parameters.resizeMode")
    seed = typed("seed", int)
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise invalid("seed must be between 0 and 4294967295.", "parameters.seed")
    storage = typed("storageUri", str)
    if storage is not None and (not storage.startswith("gs://") or len(storage) <= 5):
        raise invalid("storageUri must be a gs:// URI.", "parameters.storageUri")
    width, height = DIMENSIONS[(res, ratio)]
    return {"prompt": prompt or "", "width": width, "height": height, "seconds": seconds, "samples": samples,
            "storage_uri": storage}


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise invalid("Invalid JSON payload received. Unexpected token.") from None

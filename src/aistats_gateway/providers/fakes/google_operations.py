"""Long-running operations of the fake Google Veo APIs (:mod:`.google`): creation, completion on the
injectable clock and the Operation JSON of each API (Gemini files, Vertex inline bytes or GCS objects)."""
from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from starlette.requests import Request

from .google_state import FakeGoogleState, Operation
from .openai import render_media

RAI_REASON = ("Veo could not generate videos because the output violates Google's Responsible AI practices. "
              "If you think this was an error, send feedback. Support codes: 29310472")
INTERNAL_FAILURE = "Video generation failed due to an internal error. Please try again later."


def new_operation(state: FakeGoogleState, api: str, model: str, values: dict[str, Any], *,
                   project: str | None = None, location: str | None = None) -> Operation:
    prompt = values["prompt"].lower()
    fail: tuple[str, Any, str] | None = None
    if any(w.lower() in prompt for w in state.filter_prompts):
        fail = ("filtered", values["samples"], RAI_REASON)
    elif state.fail_jobs:
        fail = ("error", 13, INTERNAL_FAILURE)
    if api == "studio":
        name = f"models/{model}/operations/{secrets.token_hex(6)}"
    else:
        name = f"projects/{project}/locations/{location}/publishers/google/models/{model}/operations/{uuid.uuid4()}"
    op = Operation(name, api, model, state.clock(), state.render_seconds, values["width"], values["height"],
                   values["seconds"], values["samples"], values["prompt"], fail, values.get("storage_uri"),
                   project, location)
    state.operations[name] = op
    return op


def video_bytes(op: Operation) -> bytes:
    return render_media("video", f"{op.width}x{op.height}", str(op.seconds))


def _done(op: Operation, state: FakeGoogleState) -> bool:
    return state.clock() >= op.created_mono + op.render_seconds


def operation_json(op: Operation, state: FakeGoogleState, request: Request) -> dict[str, Any]:
    if not _done(op, state):
        return {"name": op.name}  # proto3 JSON leaves done=false out
    out: dict[str, Any] = {"name": op.name, "done": True}
    if op.fail and op.fail[0] == "error":
        out["error"] = {"code": op.fail[1], "message": op.fail[2]}
        return out
    filtered = op.fail[1] if op.fail else 0
    reasons = [op.fail[2]] if op.fail else []
    if op.api == "studio":
        if not op.file_ids and not op.fail:
            for i in range(op.samples):
                fid = secrets.token_hex(8)
                op.file_ids.append(fid)
                state.files[fid] = (op, i, state.clock())
        base = str(request.base_url).rstrip("/")
        inner: dict[str, Any] = {"generatedSamples": [
            {"video": {"uri": f"{base}/v1beta/files/{fid}:download?alt=media"}} for fid in op.file_ids]}
        if filtered:
            inner = {"raiMediaFilteredCount": filtered, "raiMediaFilteredReasons": reasons}
        out["response"] = {"@type":
                           "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                           "generateVideoResponse": inner}
        return out
    response: dict[str, Any] = {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
                                "raiMediaFilteredCount": filtered}
    if filtered:
        response["raiMediaFilteredReasons"] = reasons
    else:
        videos = []
        for i in range(op.samples):
            if op.storage_uri:
                bucket, _, prefix = op.storage_uri[5:].partition("/")
                obj = "/".join(p for p in (prefix.strip("/"), op.short_id, f"sample_{i}.mp4") if p)
                state.objects[(bucket, obj)] = (op, i)
                videos.append({"gcsUri": f"gs://{bucket}/{obj}", "mimeType": "video/mp4"})
            else:
                videos.append({"bytesBase64Encoded": base64.b64encode(video_bytes(op)).decode(),
                               "mimeType": "video/mp4"})
        response["videos"] = videos
    out["response"] = response
    return out

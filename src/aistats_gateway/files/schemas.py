"""Wire schemas of the Files API (OpenAI's file object, list and deletion), for /openapi.json.

The upload body is multipart and parsed by hand (``files/upload.py``); :class:`FileUpload` only
documents it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FileStatus = Literal["uploaded", "processed", "error"]
UploadPurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals", "batch_output",
                      "assistants_output", "fine-tune-results"]


class FileObject(BaseModel):
    id: str = Field(description="file-…")
    object: Literal["file"] = "file"
    bytes: int = Field(description="Size in bytes")
    created_at: int = Field(description="Unix seconds")
    filename: str
    purpose: FilePurpose
    status: FileStatus = Field(description="processed once stored (and, for batch files, validated)")
    status_details: str | None = None
    expires_at: int | None = Field(default=None, description="Unix seconds; the file is deleted then")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FileUpload(BaseModel):
    """multipart/form-data fields of ``POST /v1/files`` (as the openai SDK sends them)."""

    file: bytes = Field(json_schema_extra={"format": "binary"}, description="The file; for purpose=batch, "
                        "JSONL lines {custom_id, method: POST, url, body} for one endpoint")
    purpose: UploadPurpose
    expires_after_anchor: Literal["created_at"] | None = Field(
        default=None, alias="expires_after[anchor]", description="With expires_after[seconds]")
    expires_after_seconds: int | None = Field(
        default=None, alias="expires_after[seconds]", ge=3600, le=2592000,
        description="Lifetime after created_at (default for batch files: 30 days, else kept)")

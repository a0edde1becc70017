"""Configuration: environment variables ``AISTATS_*`` and command-line flags.

Values are validated when the process starts; a bad value stops it with a message naming the
variable. Secrets that are not configured are generated once and kept in the data directory,
so a single-machine install needs no configuration at all. Several machines must share them:
set ``AISTATS_KEY_PEPPER`` and ``AISTATS_SIGNING_SECRET`` to the same values everywhere.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message says which and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AISTATS_", extra="ignore", validate_default=True)

    data_dir: Path = Field(default=Path("./data"), description="SQLite file, blobs and generated secrets")
    database_url: str | None = Field(
        default=None,
        description="sqlite+aiosqlite:///path or postgresql+psycopg://user@host/db (default: SQLite in data dir)",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_base_url: str | None = Field(
        default=None, description="Absolute base URL used in polling_url/download_url (default: from the request)"
    )
    key_pepper: str | None = Field(default=None, description="HMAC key for API key hashes")
    signing_secret: str | None = Field(default=None, description="HMAC key for signed download URLs")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    max_body_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    catalogue_file: Path | None = Field(
        default=None, description="Extra catalogue file synced after the shipped one at start"
    )
    sync_catalogue_on_start: bool = True
    catalogue_refresh_seconds: float = Field(default=1.0, ge=0.0)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Blob storage: local directory (default) or an S3-compatible bucket.
    storage: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    # Fetching client-given URLs (input images) and posting to webhook targets: the SSRF guard.
    fetch_allow_private: bool = Field(default=False, description="Allow private/loopback targets (development only)")
    fetch_allowed_hosts: str = Field(default="", description="Comma-separated hosts exempt from the address checks")
    # Background jobs: run them in this process (always on SQLite; on PostgreSQL unless you run workers).
    run_worker: bool = True
    job_concurrency: int = Field(default=4, ge=1, le=256)
    job_lease_seconds: float = Field(default=120.0, ge=1.0, description="How long a crashed worker holds a job")
    job_workspace_concurrency: int = Field(
        default=0, ge=0, le=256,
        description="Most background jobs one workspace runs at once per process (0: job_concurrency - 1)")
    job_poll_age_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="Poll a running job at least this fraction of its age apart (0: the provider's backoff only)")
    job_max_idle_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="Longest sleep of the in-process engine between looks for work")
    breaker_threshold: int = Field(default=5, ge=1, description="Consecutive retryable failures after which a "
                                   "provider is skipped (its circuit opens)")
    breaker_cooldown_seconds: float = Field(default=30.0, ge=0.0, description="How long an open circuit skips "
                                            "its provider before trying it again")
    upstream_timeout_seconds: float = Field(default=60.0, gt=0)
    # Job webhooks.
    webhook_allow_local: bool = Field(default=False, description="Allow http://localhost targets (development)")
    webhook_retry_schedule: str = Field(default="10,60,300,900,2400",
                                        description="Seconds before each retry; attempts = entries + 1")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Files API (/v1/files): upload size limit, batch-file bounds and the default expiry of batch files.
    files_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="Largest file upload (413 above)")
    files_batch_max_lines: int = Field(default=50_000, ge=1,
                                       description="Most requests in a batch (its file or inline requests[])")
    files_batch_max_line_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                            description="Longest line of a batch file")
    files_batch_expires_seconds: int = Field(default=30 * 24 * 3600, ge=0,
                                             description="Default lifetime of purpose=batch files (0 = keep)")
    # Batches API (/v1/batches): batches running at once per workspace, provider calls at once per process.
    batches_max_in_flight: int = Field(default=100, ge=1, description="Unfinished batches per workspace (429 above)")
    batches_provider_concurrency: int = Field(default=64, ge=1,
                                              description="Batch rows calling one provider at once, per process")
    batches_concurrency: int = Field(default=32, ge=1, le=1024,
                                     description="Rows of one batch in a provider call at once, per process")
    batches_completion_windows: str = Field(
        default="24h", description="Completion windows of gateway-mode batches, comma-separated (1h … 30d); "
                                   "native batches take the windows the catalogue lists for the provider")
    batches_chunk_rows: int = Field(default=64, ge=1, le=1000,
                                    description="Batch rows leased by one claim (one conditional UPDATE)")
    # Hardening limits (docs/configuration.md, "Limits").
    max_jobs_in_flight_per_key: int = Field(default=32, ge=1, le=100_000,
                                            description="Video jobs queued or in progress per API key")
    local_max_render_cost: int = Field(default=1920 * 1080 * 20 * 2, ge=1,
                                       description="Local renderer: width x height x seconds x samples per job")
    reference_max_total_bytes: int = Field(default=64 * 1024 * 1024, ge=1024,
                                           description="Image references of one request together")
    reference_max_total_pixels: int = Field(default=50_000_000, ge=1)
    reference_max_image_pixels: int = Field(default=16_777_216, ge=1)
    reference_fetch_seconds: float = Field(default=30.0, gt=0, description="Every URL fetch of one request together")
    min_free_disk_bytes: int = Field(default=256 * 1024 * 1024, ge=0,
                                     description="Below this, /readyz is 503 and creates answer 503")
    scratch_orphan_seconds: float = Field(default=600.0, ge=0,
                                          description="Sweep scratch files untouched this long at start")
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        try:
            values = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ValueError("must be comma-separated seconds, e.g. 10,60,300") from None
        if not values or any(x < 0 for x in values):
            raise ValueError("must list at least one non-negative delay")
        return v

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.webhook_retry_schedule.split(",") if x.strip())

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+psycopg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+psycopg:// "
                f"(got {v.split('://')[0]!r})"
            )
        return v

    @field_validator("public_base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must be an absolute http(s) URL")
        return v.rstrip("/")

    # ---- derived values -------------------------------------------------------------------

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    @property
    def uses_local_disk_storage(self) -> bool:
        """Blobs live in the data directory (the disk check of /readyz and create applies)."""
        return self.storage == "local"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    def job_workspace_cap(self) -> int:
        """Per-workspace share of this process's job slots: one workspace never holds them all, so
        another's job starts while the first one's backlog runs."""
        if self.job_workspace_concurrency:
            return min(self.job_workspace_concurrency, self.job_concurrency)
        return max(1, self.job_concurrency - 1)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def allowed_hosts(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.fetch_allowed_hosts.split(",") if h.strip())

    def ensure_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.blob_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"AISTATS_DATA_DIR={self.data_dir}: cannot create directory: {e}") from e

    def _secret_file(self, name: str) -> bytes:
        self.ensure_data_dir()
        path = self.data_dir / f".{name}"
        if path.exists():
            return path.read_text().strip().encode()
        value = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value.encode()

    @cached_property
    def pepper(self) -> bytes:
        return self.key_pepper.encode() if self.key_pepper else self._secret_file("key_pepper")

    @cached_property
    def signing_key(self) -> bytes:
        return self.signing_secret.encode() if self.signing_secret else self._secret_file("signing_secret")


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides (flags); explain failures."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            lines.append(f"AISTATS_{field.upper()} (or --{field.replace('_', '-')}): {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None

"""Imports every domain's tables so Base.metadata is complete (Alembic, tests)."""

from aistats_gateway.auth.tables import ApiKey, RateCounter, Workspace
from aistats_gateway.batches.tables import Batch, BatchRow
from aistats_gateway.billing.tables import Hold, LedgerEntry
from aistats_gateway.catalogue.tables import (
    CatalogueModel,
    CatalogueOrganisation,
    CatalogueProvider,
    CatalogueState,
)
from aistats_gateway.files.tables import StoredFile
from aistats_gateway.idempotency.tables import IdempotencyRecord
from aistats_gateway.inference.tables import Generation, TokenCounter
from aistats_gateway.videos.tables import VideoJob, VideoOutput
from aistats_gateway.webhooks.tables import WebhookDelivery

__all__ = [
    "ApiKey",
    "Batch",
    "BatchRow",
    "CatalogueModel",
    "CatalogueOrganisation",
    "CatalogueProvider",
    "CatalogueState",
    "Generation",
    "Hold",
    "IdempotencyRecord",
    "LedgerEntry",
    "RateCounter",
    "StoredFile",
    "TokenCounter",
    "VideoJob",
    "VideoOutput",
    "WebhookDelivery",
    "Workspace",
]

"""``GET /v1/credits``: the caller's workspace balance, holds and recent ledger entries.

The balance fields are at the top level (this gateway's shape) and again in ``credits`` beside
``ok: true`` (the Phaseo SDK's ``{ok, credits}`` envelope).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from aistats_gateway.auth.dependencies import Principal, require_key
from aistats_gateway.billing import ledger
from aistats_gateway.http.responses import ERRORS, JSONBytes

router = APIRouter(prefix="/v1", tags=["Credits"], responses=ERRORS)


class LedgerEntryOut(BaseModel):
    id: int
    kind: str
    amount_nanos: int
    amount_usd: str
    hold_id: str | None
    memo: str | None
    created_at: int


class CreditsBalance(BaseModel):
    workspace_id: str
    currency: str = "usd"
    balance_nanos: int
    held_nanos: int
    available_nanos: int
    balance_usd: str
    held_usd: str
    available_usd: str


class Credits(BaseModel):
    ok: bool = True
    credits: CreditsBalance = Field(description="The balance in the Phaseo SDK's envelope (same values)")
    object: str = "credits"
    workspace_id: str
    currency: str = "usd"
    balance_nanos: int
    held_nanos: int
    available_nanos: int
    balance_usd: str
    held_usd: str
    available_usd: str
    entries: list[LedgerEntryOut]


@router.get("/credits", response_model=Credits, summary="Your credit balance and ledger")
async def get_credits(request: Request, principal: Principal = Depends(require_key),
                      limit: Annotated[int, Query(ge=1, le=500, description="Ledger entries, newest first")] = 50
                      ) -> Response:
    gw = request.app.state.gateway
    async with gw.sessions() as s:
        bal = await ledger.balance(s, principal.workspace_id)
        entries: list[dict[str, Any]] = await ledger.entries(s, principal.workspace_id, limit)
    balance = {
        "workspace_id": principal.workspace_id, "currency": "usd",
        "balance_nanos": bal.balance_nanos, "held_nanos": bal.held_nanos, "available_nanos": bal.available_nanos,
        "balance_usd": ledger.usd(bal.balance_nanos), "held_usd": ledger.usd(bal.held_nanos),
        "available_usd": ledger.usd(bal.available_nanos),
    }
    return JSONBytes({"ok": True, "credits": balance, "object": "credits", **balance, "entries": entries})

"""A process that died between "the job is done" and "the hold is settled" leaves a terminal job
with an open hold. Two gateways started on that database afterwards settle it exactly once."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from aistats_gateway.app import create_app
from aistats_gateway.billing import accounts as keys_service
from aistats_gateway.billing import ledger
from aistats_gateway.billing import service as billing
from aistats_gateway.billing.tables import Hold, LedgerEntry
from aistats_gateway.db.base import utcnow
from aistats_gateway.migrate import upgrade
from aistats_gateway.settings import load_settings
from aistats_gateway.videos.tables import VideoJob, VideoOutput
from tests.support.gateway import BACKENDS, ServerThread, new_database, run_async

USD = 1_000_000_000
OVERLAY = {"models": [{
    "model_id": "local/priced-video", "name": "Priced local video", "organisation": "local", "status": "active",
    "input_types": ["text"], "output_types": ["video"],
    "providers": [{"provider": "local", "provider_model_slug": "procedural", "endpoints": ["video.generation"],
                   "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0.25"}],
                   "parameters": {"video.generation": {"duration": {"minimum": 1, "maximum": 20}}}}],
}]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("terminal", ["completed", "failed"])
def test_open_hold_of_finished_job_settles_once_after_restart(tmp_path: Path, backend: str, terminal: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = new_database(backend, data)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    settings = load_settings(data_dir=data, database_url=db.url, key_pepper="p", signing_secret="s",
                             catalogue_file=overlay, log_level="warning")
    upgrade(settings.db_url)
    job_id = "video_" + secrets.token_hex(12)

    async def crashed_state(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            k = await keys_service.create_key(s, settings.pepper, "crash", credits_nanos=10 * USD)
            s.add(VideoJob(id=job_id, workspace_id=k.workspace_id, key_id=k.id, model="local/priced-video",
                           requested_model="local/priced-video", status=terminal, candidates=["local"],
                           provider="local", provider_model_slug="procedural", native_id=job_id, attempts=[],
                           params={"duration": 4, "resolution": "480p"}, output_access="both", seconds=4.0,
                           size="854x480", audio=False, sample_count=1, progress=100 if terminal == "completed" else 3,
                           provider_done=terminal == "completed", provider_usage={"seconds": 4.0, "count": 1},
                           completed_at=utcnow(), error_code=None if terminal == "completed" else "boom",
                           billing={"state": "held", "held_nanos": 2 * USD, "estimate_nanos": 2 * USD}))
            await s.flush()
            if terminal == "completed":
                s.add(VideoOutput(job_id=job_id, index=0, variant="video", storage_key=f"videos/{job_id}/0.mp4",
                                  mime_type="video/mp4", bytes=1, sha256="0" * 64, width=854, height=480,
                                  duration_seconds=4.0))
            await ledger.place_hold(s, hold_id=billing.hold_id(job_id), workspace_id=k.workspace_id, key_id=k.id,
                                    ref_kind="video", ref=job_id, amount_nanos=2 * USD)
            return k.workspace_id

    workspace = run_async(crashed_state, settings)
    # "Restart": two server processes' worth of engines start on the same database at once.
    servers = [ServerThread(create_app(settings)).start(), ServerThread(create_app(settings)).start()]
    try:
        deadline = time.monotonic() + 30

        async def state(sessions: Any) -> Any:
            async with sessions() as s:
                hold = await s.get(Hold, billing.hold_id(job_id))
                finals = (await s.execute(select(func.count()).select_from(LedgerEntry).where(
                    LedgerEntry.hold_id == hold.id, LedgerEntry.kind.in_(("settle", "void"))))).scalar()
                job = await s.get(VideoJob, job_id)
                return hold.state, hold.settled_nanos, finals, job.billing, await ledger.balance(s, workspace), \
                    await ledger.recompute(s, workspace)

        while True:
            hold_state, settled, finals, job_billing, bal, again = run_async(state, settings)
            if hold_state != "held" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let the second engine try as well
        hold_state, settled, finals, job_billing, bal, again = run_async(state, settings)
    finally:
        for srv in servers:
            srv.stop()
        db.drop()
    assert finals == 1
    assert bal == again and bal.held_nanos == 0
    if terminal == "completed":
        assert hold_state == "settled" and settled == USD  # 4 s at 0.25 USD
        assert bal.balance_nanos == 9 * USD and job_billing["state"] == "settled"
    else:
        assert hold_state == "void" and settled == 0
        assert bal.balance_nanos == 10 * USD and job_billing["state"] == "void"

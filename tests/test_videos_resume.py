"""Unfinished video jobs survive crashes: real ``serve`` and ``worker`` processes killed with SIGKILL.

SQLite: the server runs jobs in-process, so a new server finishes what a killed one started.
PostgreSQL: ``serve`` with ``AISTATS_RUN_WORKER=false`` plus separate ``worker`` processes.
Every process uses a 3 s job lease, so work held by a killed process is taken over quickly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.settings import load_settings
from tests.support.gateway import Database, new_database, run_async

MODEL = "openai/test-sora-only"
LEASE_SECONDS = 3
WORKER_READY = "Starting worker on queues"  # procrastinate's log line once it fetches jobs
OVERLAY = {"models": [{
    "model_id": MODEL, "name": "Test Sora", "organisation": "openai", "status": "active",
    "input_types": ["text"], "output_types": ["video"],
    "providers": [{
        "provider": "openai", "provider_model_slug": "sora-2", "endpoints": ["video.generation"],
        "input_modalities": ["text"], "output_modalities": ["video"],
        "parameters": {"video.generation": {
            "duration": {"values": [4, 8], "default": 4, "aliases": ["seconds"]},
            "resolution": {"values": ["720p"], "default": "720p", "aliases": ["size"]},
            "aspect_ratio": {"values": ["16:9"], "default": "16:9"},
        }},
    }],
}]}
OPENAI_JOB = {"model": MODEL, "prompt": "a lighthouse at dusk", "seconds": 4, "size": "1280x720"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A gateway CLI process whose output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen([sys.executable, "-m", "aistats_gateway.cli", *args], env=env,
                                      stdout=self._out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()

    def wait_log(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            assert self.popen.poll() is None, f"{self.log.name} exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{self.log.name} never logged {text!r}:\n{self.tail()}"
            time.sleep(0.1)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class Site:
    """One database and data directory shared by the processes of a test."""

    def __init__(self, backend: str, tmp: Path, fake: RunningFake) -> None:
        self.backend, self.tmp = backend, tmp
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True)
        self.db: Database = new_database(backend, self.data_dir)
        overlay = tmp / "overlay.yaml"
        overlay.write_text(yaml.safe_dump(OVERLAY))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AISTATS_")}
        self.env.update({
            "AISTATS_DATA_DIR": str(self.data_dir), "AISTATS_DATABASE_URL": self.db.url,
            "AISTATS_KEY_PEPPER": "pepper-" + secrets.token_hex(8),
            "AISTATS_SIGNING_SECRET": "signing-" + secrets.token_hex(8),
            "AISTATS_CATALOGUE_FILE": str(overlay), "AISTATS_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            "AISTATS_LOG_LEVEL": "info", "AISTATS_LOG_FORMAT": "text",
            "AISTATS_PROVIDER_OPENAI_API_KEY": "sk-test", "AISTATS_PROVIDER_OPENAI_BASE_URL": fake.base_url,
            "AISTATS_PROVIDER_OPENAI_POLL_INTERVAL": "0.3", "AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL": "1",
        })
        self.procs: list[Proc] = []
        self.key: str | None = None
        self.base_url = ""

    def _start(self, name: str, args: list[str], **env: str) -> Proc:
        proc = Proc(args, {**self.env, **env}, self.tmp / f"{name}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def serve(self) -> Proc:
        """Start a server (without in-process jobs on PostgreSQL) and wait until it is ready."""
        port = _free_port()
        env = {"AISTATS_RUN_WORKER": "false"} if self.backend == "postgres" else {}
        proc = self._start("serve", ["serve", "--port", str(port)], **env)
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.popen.poll() is None, f"serve exited:\n{proc.tail()}"
            try:
                if httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"serve did not become ready:\n{proc.tail()}"
            time.sleep(0.1)
        return proc

    def worker(self, wait: bool = True) -> Proc:
        proc = self._start("worker", ["worker"])
        if wait:
            proc.wait_log(WORKER_READY)
        return proc

    def launch(self, workers: int = 0) -> tuple[Proc, list[Proc]]:
        """A server and ``workers`` worker processes, started side by side; returns once all are ready.
        The first launch lets the server migrate the database before workers start, and makes a key."""
        first = self.key is None
        started = [] if first else [self.worker(wait=False) for _ in range(workers)]
        server = self.serve()
        if first:
            started = [self.worker(wait=False) for _ in range(workers)]
            out = subprocess.run([sys.executable, "-m", "aistats_gateway.cli", "keys", "create", "--name", "resume",
                                  "--credits", "10", "--json"], env=self.env, capture_output=True, text=True,
                                 timeout=90, check=True)
            self.created = json.loads(out.stdout)
            self.key = self.created["key"]
        for w in started:
            w.wait_log(WORKER_READY)
        return server, started

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.tail()}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.db.drop()


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("openai", render_seconds=2.0) as running:
        yield running


@pytest.fixture(autouse=True)
def reset_fake(fake: RunningFake) -> Iterator[None]:
    yield
    fake.state.create_delay_seconds, fake.state.render_seconds = 0.0, 2.0


@pytest.fixture
def site_factory(tmp_path: Path, fake: RunningFake) -> Iterator[Any]:
    sites: list[Site] = []

    def make(backend: str) -> Site:
        site = Site(backend, tmp_path / f"site{len(sites)}", fake)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()


def wait_for(site: Site, api: httpx.Client, video_id: str, statuses: tuple[str, ...], timeout: float = 60.0,
             check: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            r = api.get(f"/v1/videos/{video_id}")
            if r.status_code == 200:
                body = r.json()
                if body["status"] in statuses and (check is None or check(body)):
                    return body
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{video_id} did not reach {statuses}: {body}\n{site.logs()}")


def creates_for(fake: RunningFake, video_id: str) -> list[Any]:
    return [r for r in fake.state.creates if r.headers.get("idempotency-key") == video_id]


def fake_jobs_for(fake: RunningFake, video_id: str) -> list[Any]:
    return [j for j in fake.state.videos.values() if j.idempotency_key == video_id]


def downloads_of(fake: RunningFake, native_id: str) -> int:
    return len(fake.state.find_requests("GET", f"/v1/videos/{native_id}/content"))


def assert_openai_output(api: httpx.Client, video_id: str) -> None:
    r = api.get(f"/v1/videos/{video_id}/content")
    assert r.status_code == 200, r.text
    assert r.content == render_media("video", "1280x720", "4")


# ---------------------------------------------------------------- processes die mid-job and mid-submit


def job_rows(site: Site, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The jobs as stored (read straight from the database, with no gateway process running)."""
    from sqlalchemy import select

    from aistats_gateway.videos.tables import VideoJob

    async def work(sessions: Any) -> dict[str, dict[str, Any]]:
        async with sessions() as s:
            rows = (await s.execute(select(VideoJob).where(VideoJob.id.in_(ids)))).scalars()
            return {r.id: {"status": r.status, "native_id": r.native_id, "progress": r.progress,
                           "provider_done": r.provider_done, "lease_owner": r.lease_owner} for r in rows}

    return run_async(work, load_settings(data_dir=site.data_dir, database_url=site.db.url))


def start_hanging_submit(site: Site, fake: RunningFake) -> tuple[str, threading.Thread, list[BaseException]]:
    """POST a job whose create reaches the provider but whose answer never comes back; returns its id."""
    fake.state.create_delay_seconds = 600.0
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            with site.api() as api:
                r = api.post("/v1/videos", json=OPENAI_JOB)
            errors.append(AssertionError(f"the create answered: {r.status_code} {r.text}"))
        except httpx.HTTPError as e:  # the server is killed under this request
            errors.append(e)

    known = set(fake.state.videos)
    t = threading.Thread(target=submit, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not (new := [j for j in list(fake.state.videos.values()) if j.id not in known]):
        assert time.monotonic() < deadline, site.logs()
        time.sleep(0.05)
    vid = new[0].idempotency_key  # the gateway's job id
    assert vid and vid.startswith("video_")
    return vid, t, errors


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_killed_processes_resume_unfinished_jobs(site_factory: Any, fake: RunningFake, backend: str) -> None:
    """SIGKILL every gateway process while a local render runs, an OpenAI job renders and a create
    request hangs at the provider; new processes finish all three from the database."""
    site = site_factory(backend)
    server, workers = site.launch(workers=1 if backend == "postgres" else 0)  # SQLite: the server runs jobs
    fake.state.render_seconds = 10.0
    with site.api() as api:
        r = api.post("/v1/videos", json={"model": "local/procedural-video", "prompt": "tide pools", "seconds": 20,
                                         "resolution": "720p"})  # a few seconds of encoding
        assert r.status_code == 202, r.text
        local_id = r.json()["id"]
        r = api.post("/v1/videos", json=OPENAI_JOB)
        assert r.status_code == 202, r.text
        openai_id = r.json()["id"]
        wait_for(site, api, local_id, ("in_progress",), timeout=60, check=lambda b: b["progress"] > 0)
        wait_for(site, api, openai_id, ("in_progress",), timeout=60)
    submit_id, thread, errors = start_hanging_submit(site, fake)

    for proc in [*workers, server]:
        proc.kill()
    thread.join(timeout=30)
    assert errors and isinstance(errors[0], httpx.HTTPError), errors
    fake.state.create_delay_seconds = 0.0
    [openai_job] = fake_jobs_for(fake, openai_id)
    assert downloads_of(fake, openai_job.id) == 0
    stored = job_rows(site, [local_id, openai_id, submit_id])
    assert stored[local_id]["status"] == "in_progress" and stored[local_id]["progress"] < 100, stored
    assert stored[openai_id]["status"] == "in_progress" and not stored[openai_id]["provider_done"], stored
    assert stored[submit_id]["status"] == "queued" and stored[submit_id]["native_id"] is None, stored

    site.launch(workers=1 if backend == "postgres" else 0)
    with site.api() as api:
        bodies = {vid: wait_for(site, api, vid, ("completed", "failed", "expired", "cancelled"), timeout=120)
                  for vid in (local_id, openai_id, submit_id)}
        assert {vid: b["status"] for vid, b in bodies.items()} == dict.fromkeys(bodies, "completed"), bodies
        assert bodies[local_id]["outputs"][0]["duration_seconds"] == pytest.approx(20, abs=0.2)
        r = api.get(f"/v1/videos/{local_id}/content")
        assert r.status_code == 200 and len(r.content) == bodies[local_id]["outputs"][0]["bytes"]
        assert_openai_output(api, openai_id)
        assert_openai_output(api, submit_id)
    # The OpenAI job was polled on and downloaded once; nothing was submitted twice.
    assert len(creates_for(fake, openai_id)) == 1
    assert downloads_of(fake, openai_job.id) == 1
    # The interrupted submit was resumed with the job id as idempotency key: one video, not two.
    assert len(creates_for(fake, submit_id)) == 2
    [submitted] = fake_jobs_for(fake, submit_id)
    assert downloads_of(fake, submitted.id) == 1
    assert bodies[submit_id]["provider"] == "openai"


# ---------------------------------------------------------------- two workers, one job each


def _insert_unsubmitted(site: Site, count: int) -> list[str]:
    """Jobs stored but not yet sent to a provider (as after a crash), so the workers race to submit."""
    from aistats_gateway.videos.tables import VideoJob

    settings = load_settings(data_dir=site.data_dir, database_url=site.db.url)
    now = dt.datetime.now(dt.UTC)
    ids = ["video_" + secrets.token_hex(12) for _ in range(count)]

    async def work(sessions: Any) -> None:
        async with sessions() as s, s.begin():
            for vid in ids:
                s.add(VideoJob(
                    id=vid, workspace_id=site.created["workspace_id"], key_id=site.created["id"], model=MODEL,
                    requested_model=MODEL, status="queued", candidates=["openai"], provider=None,
                    provider_model_slug="sora-2", native_id=None, attempts=[],
                    params={"prompt": f"race {vid}", "duration": 4, "width": 1280, "height": 720,
                            "resolution": "720p", "aspect_ratio": "16:9", "size": None, "values": {},
                            "provider_params": {}, "images": [], "slugs": {"openai": "sora-2"}},
                    output_access="both", seconds=4.0, size="1280x720", audio=False, sample_count=1, progress=0,
                    progress_source="estimated", next_run_at=now, lease_owner=None, lease_until=None))

    run_async(work, settings)
    return ids


def test_two_postgres_workers_never_share_a_job(site_factory: Any, fake: RunningFake) -> None:
    fake.state.render_seconds = 2.0
    site = site_factory("postgres")
    _, workers = site.launch(workers=2)  # both running before the work appears
    assert all(w.popen.poll() is None for w in workers), site.logs()
    ids = _insert_unsubmitted(site, 8)
    with site.api() as api:
        for vid in ids:
            body = wait_for(site, api, vid, ("completed", "failed", "expired"), timeout=60)
            assert body["status"] == "completed", body
            assert [a["outcome"] for a in body["attempts"]] == ["accepted"], body["attempts"]
    for vid in ids:
        assert len(creates_for(fake, vid)) == 1, vid
        [job] = fake_jobs_for(fake, vid)
        assert downloads_of(fake, job.id) == 1, vid
    assert all(w.popen.poll() is None for w in workers), site.logs()

"""The provider kit for tests: a real gateway whose provider points at one of the in-process fakes.

A provider test module describes its provider once and takes its fixtures from here::

    KIT = ProviderKit("luma", api_key=KEY, fake_kwargs={"render_seconds": 0.5}, overlay=OVERLAY)
    fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)

* ``fake`` (module): the fake (``providers/fakes``) on 127.0.0.1, started once per module.
* ``provider_env`` (module): ``AISTATS_PROVIDER_<ID>_{API_KEY,BASE_URL,POLL_INTERVAL,MAX_POLL_INTERVAL}``
  pointing each of ``KIT.providers`` at the fake (the adapters read them at call time: the gateway runs
  in this process), plus ``KIT.extra_env`` (a value of None unsets the variable).
* ``gateway`` (module, SQLite and PostgreSQL): a gateway with ``KIT.overlay`` as its catalogue overlay.
* ``reset_fake`` (autouse): after every test that used the fake, its knobs go back to how the fake was
  built (``FakeState.reset``); with ``KIT.clear`` its recorded requests and jobs are emptied too.

Helpers: :func:`accepted` (POST /v1/videos expecting 202), :func:`wait_for_status` (poll a video until
a terminal status, recording every status seen), :func:`final_status`, :func:`wait_idle` (no runner
holds the job any more), :func:`video_ids`, the image builders :func:`image_bytes` / :func:`data_url`,
:func:`video_request` for adapter unit tests, and :func:`falls_back_to_local` (the 503 → local fallback
every provider shares).

Invariants: no test talks to the internet (fakes listen on 127.0.0.1); waits are bounded by a
deadline and never assert on elapsed time.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from aistats_gateway.providers.base import VideoRequest
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import BACKENDS, Gateway, run_async, running_gateway

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})


def env_prefix(provider_id: str) -> str:
    """``x-ai`` → ``AISTATS_PROVIDER_X_AI_``."""
    return "AISTATS_PROVIDER_" + provider_id.upper().replace("-", "_") + "_"


@dataclass(frozen=True)
class ProviderKit:
    """One fake and the gateway providers pointed at it."""

    fake: str  # a name in providers.fakes.FAKES
    api_key: str  # what the gateway sends (AISTATS_PROVIDER_<ID>_API_KEY)
    providers: tuple[str, ...] = ()  # gateway provider ids; default: (fake,)
    fake_kwargs: Mapping[str, Any] = field(default_factory=dict)
    prefix: str = ""  # RunningFake's prefix (its base_url = url + prefix)
    base_url: Callable[[RunningFake], str] = lambda fake: fake.url  # AISTATS_PROVIDER_<ID>_BASE_URL
    poll_interval: float = 0.1
    max_poll_interval: float = 0.3
    extra_env: Mapping[str, str | None] = field(default_factory=dict)
    overlay: Mapping[str, Any] | None = None
    gateway_settings: Mapping[str, Any] = field(default_factory=dict)
    clear: bool = False  # reset_fake also empties the fake's recorded requests and jobs

    @property
    def provider_ids(self) -> tuple[str, ...]:
        return self.providers or (self.fake,)

    def env(self, fake: RunningFake) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for pid in self.provider_ids:
            p = env_prefix(pid)
            values |= {p + "API_KEY": self.api_key, p + "BASE_URL": self.base_url(fake),
                       p + "POLL_INTERVAL": f"{self.poll_interval:g}",
                       p + "MAX_POLL_INTERVAL": f"{self.max_poll_interval:g}"}
        return values | dict(self.extra_env)


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the duration of the block."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        yield


@contextmanager
def gateway_with(backend: str, tmp: Any, overlay: Mapping[str, Any] | None = None,
                 **settings: Any) -> Iterator[Gateway]:
    """A running gateway on ``backend`` with ``overlay`` (a catalogue document) synced at start."""
    if overlay is not None:
        path = tmp / "overlay.yaml"
        path.write_text(yaml.safe_dump(dict(overlay)))
        settings = {"catalogue_file": path, **settings}
    with running_gateway(backend, tmp, **settings) as gw:
        yield gw


def provider_fixtures(kit: ProviderKit) -> tuple[Any, Any, Any, Any]:
    """The module's ``fake``, ``provider_env``, ``gateway`` and autouse ``reset_fake`` fixtures."""

    @pytest.fixture(scope="module", name="fake")
    def fake_fixture() -> Iterator[RunningFake]:
        with RunningFake(kit.fake, prefix=kit.prefix, **kit.fake_kwargs) as running:
            yield running

    @pytest.fixture(scope="module", name="provider_env")
    def provider_env_fixture(fake: RunningFake) -> Iterator[None]:
        with environment(kit.env(fake)):
            yield

    @pytest.fixture(scope="module", params=BACKENDS, name="gateway")
    def gateway_fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                        provider_env: None) -> Iterator[Gateway]:
        with gateway_with(request.param, tmp_path_factory.mktemp(kit.fake), kit.overlay,
                          **kit.gateway_settings) as gw:
            yield gw

    @pytest.fixture(autouse=True, name="reset_fake")
    def reset_fixture(request: pytest.FixtureRequest) -> Iterator[None]:
        yield
        if "fake" in request.fixturenames:  # (unit tests never start the fake)
            request.getfixturevalue("fake").state.reset(clear=kit.clear)

    return fake_fixture, provider_env_fixture, gateway_fixture, reset_fixture


# ---------------------------------------------------------------- talking to the gateway


def accepted(api: httpx.Client, **body: Any) -> dict[str, Any]:
    """POST /v1/videos, expecting 202; the video object."""
    r = api.post("/v1/videos", json=body)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_for_status(api: httpx.Client, video_id: str, timeout: float = 30.0,
                    until: frozenset[str] = TERMINAL) -> tuple[dict[str, Any], list[str]]:
    """Poll GET /v1/videos/{id} until its status is in ``until``: (the last body, every status seen)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/v1/videos/{video_id}").json()
        seen.append(body["status"])
        if body["status"] in until:
            return body, seen
        assert time.monotonic() < deadline, f"{video_id} still {body['status']}"
        time.sleep(0.05)


def final_status(api: httpx.Client, video_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The video object once it is terminal."""
    return wait_for_status(api, video_id, timeout)[0]


def wait_idle(gateway: Gateway, video_id: str, timeout: float = 30.0) -> None:
    """Wait until no runner holds the job's lease. Once a terminal job is idle, every poll a runner started
    for it has reached the provider, and none can start again (a terminal job cannot be claimed): counting
    the provider's requests from then on is not a race."""
    from sqlalchemy import select

    from aistats_gateway.videos.tables import VideoJob

    async def owner(sessions: Any) -> str | None:
        async with sessions() as s:
            value: str | None = (await s.execute(select(VideoJob.lease_owner)
                                                 .where(VideoJob.id == video_id))).scalar_one()
            return value

    deadline = time.monotonic() + timeout
    while run_async(owner, gateway.settings) is not None:
        assert time.monotonic() < deadline, f"{video_id} is still leased"
        time.sleep(0.05)


def video_ids(api: httpx.Client) -> set[str]:
    return {v["id"] for v in api.get("/v1/videos", params={"limit": 100}).json()["data"]}


# ---------------------------------------------------------------- inputs


def image_bytes(width: int, height: int, fmt: str = "PNG", colour: tuple[int, int, int] = (30, 90, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format=fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def video_request(**fields: Any) -> VideoRequest:
    """A VideoRequest for adapter unit tests: 5 s of 1280x720 16:9 unless ``fields`` say otherwise."""
    base: dict[str, Any] = {"job_id": "video_job1", "model_slug": "model", "prompt": "a koi pond at night",
                            "duration": 5, "width": 1280, "height": 720, "resolution": "720p",
                            "aspect_ratio": "16:9", "size": None}
    return VideoRequest(**(base | fields))


# ---------------------------------------------------------------- behaviour every provider shares


def outcomes(video: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """(provider, outcome, upstream status) of each recorded attempt."""
    return [(a["provider"], a["outcome"], a["status"]) for a in video["attempts"]]


def falls_back_to_local(api: httpx.Client, fake: RunningFake, provider: str,
                        **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fail the fake's next create with 503 and create ``body``: the job goes to the local renderer after one
    recorded attempt at ``provider``, and completes there. Returns (the created object, the final one)."""
    fake.state.fail_next_creates, fake.state.fail_status = 1, 503
    created = accepted(api, **body)
    assert created["provider"] == "local", created
    assert outcomes(created) == [(provider, "error", 503), ("local", "accepted", None)], created["attempts"]
    final = final_status(api, created["id"])
    assert final["status"] == "completed" and final["provider"] == "local", final
    assert outcomes(final) == outcomes(created)
    return created, final

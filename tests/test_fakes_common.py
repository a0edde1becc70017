"""The fakes' shared kit (``providers/fakes/_common.py``): fault knobs, reset, the request log, the
recording endpoint wrapper, the shared job timeline. No gateway; one fake app on an in-process client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aistats_gateway.providers.fakes import _common
from aistats_gateway.providers.fakes._common import FakeState, RecordedRequest


@dataclass
class DemoState(FakeState):
    api_key: str = "k"
    blocked: list[str] = field(default_factory=list)
    jobs: dict[str, Any] = field(default_factory=dict)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", "/jobs")
    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "jobs")


class Refused(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.headers = status, headers or {}


def demo_app(state: DemoState) -> Starlette:
    def gate(request: Request, rec: RecordedRequest) -> None:
        if _common.bearer(request) != state.api_key:
            raise Refused(401)
        if state.take_rate_limit():
            raise Refused(429, state.retry_after())

    async def create(request: Request, rec: RecordedRequest) -> Response:
        if (failure := state.take_create_failure()) is not None:
            raise Refused(failure)
        rec.body = await request.json()
        state.jobs[str(len(state.jobs))] = rec.body
        return JSONResponse({"ok": True, "blocked": _common.mentions(rec.body["prompt"], state.blocked)})

    def stamp(response: Response, rec: RecordedRequest) -> None:
        response.headers["x-demo"] = "1"

    endpoint = _common.recorded(state, create, errors=Refused, gate=gate, finish=stamp,
                                answer=lambda exc, rec: JSONResponse({"error": exc.status}, exc.status, exc.headers))
    return Starlette(routes=[Route("/jobs", endpoint, methods=["POST"])])


@pytest.fixture()
def demo() -> tuple[DemoState, httpx.ASGITransport]:
    state = DemoState(render_seconds=4.0)
    return state, httpx.ASGITransport(app=demo_app(state))


async def _post(transport: Any, key: str = "k", prompt: str = "a cat") -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        return await client.post("/jobs", json={"prompt": prompt}, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.asyncio
async def test_faults_are_counted_down_and_recorded(demo: tuple[DemoState, Any]) -> None:
    state, transport = demo
    state.fail_next_creates, state.fail_status = 2, 503
    state.rate_limit_next, state.retry_after_seconds = 1, 1.5
    first = await _post(transport)
    assert first.status_code == 429 and first.headers["retry-after"] == "1.5"
    assert [(await _post(transport)).status_code for _ in range(3)] == [503, 503, 200]
    assert (await _post(transport, key="wrong")).status_code == 401
    assert [r.status for r in state.requests] == [429, 503, 503, 200, 401]
    assert all(r.path == "/jobs" and r.method == "POST" for r in state.creates)
    assert state.requests[3].body == {"prompt": "a cat"} and state.requests[3].headers["authorization"] == "Bearer k"
    ok = await _post(transport, prompt="A Blocked Word")
    assert ok.headers["x-demo"] == "1" and ok.json()["blocked"] is False
    state.blocked = ["blocked word"]
    assert (await _post(transport, prompt="A Blocked Word")).json()["blocked"] is True


@pytest.mark.asyncio
async def test_reset_restores_the_built_fake(demo: tuple[DemoState, Any]) -> None:
    state, transport = demo
    await _post(transport)
    state.fail_next_creates, state.api_key, state.render_seconds, state.blocked = 3, "other", 9.0, ["x"]
    state.retry_after_seconds = 2.0
    state.reset()
    assert (state.fail_next_creates, state.api_key, state.render_seconds, state.blocked) == (0, "k", 4.0, [])
    assert state.retry_after_seconds is None and state.retry_after() == {}
    assert len(state.requests) == 1 and len(state.jobs) == 1  # recorded state kept ...
    state.blocked.append("y")
    state.reset(clear=True, fail_status=429)
    assert state.requests == [] and state.jobs == {} and state.fail_status == 429
    assert state.blocked == []  # (a copy of the built value, not the same list)
    with pytest.raises(AttributeError):
        state.reset(no_such_knob=1)


def test_timeline_and_progress() -> None:
    stage = _common.stage
    assert [stage(t, 10.0, 0.2) for t in (0.0, 1.9, 2.0, 9.9, 10.0, 99.0)] == [
        "queued", "queued", "running", "running", "done", "done"]
    assert stage(5.0, 10.0, 0.2, fail_at=0.5) == "failed" and stage(4.9, 10.0, 0.2, fail_at=0.5) == "running"
    assert [_common.stepped_progress(f, 10) for f in (0.0, 0.05, 0.1, 0.55, 0.999, 1.0)] == [0, 0, 10, 50, 90, 99]
    assert _common.stepped_progress(0.5, 0) == 0  # (at least one step)


def test_clock_and_idempotency() -> None:
    now = [100.0]
    state = DemoState(clock=lambda: now[0])
    wall = state.wall()
    now[0] += 30
    assert state.wall() - wall == pytest.approx(30.0) and state.unix(100.0) == int(wall)
    index: dict[str, str] = {}
    _common.remember(index, "key-1", "job-1")
    _common.remember(index, None, "job-2")
    assert _common.replay(index, {"job-1": "J1"}, "key-1") == "J1"
    assert _common.replay(index, {}, "key-1") is None  # the job is gone
    assert _common.replay(index, {"job-1": "J1"}, None) is None and index == {"key-1": "job-1"}

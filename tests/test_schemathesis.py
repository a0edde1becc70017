"""Property-based API conformance: schemathesis drives every operation of the gateway's OpenAPI
document against the running gateway (SQLite and PostgreSQL), authenticated with a valid key, with
schema-conforming (positive) and schema-violating (negative) inputs.

Any 5xx, any status code the document does not list for the operation, and any response whose
content type, headers or body break the documented schema fails the test. The operations are read
from the document, so routes added later are covered without touching this file. A failure here
means the app or its OpenAPI document is wrong: fix the app, or document the response truthfully
(route ``responses=`` or ``http.responses.ERRORS``); never loosen the checks.

The cases are generated when the module is collected, from the document of an app built with the
same code (one pytest item per operation and backend); ``test_served_document_is_the_tested_one``
proves that the live gateway serves exactly that document at ``/openapi.json``.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck

from aistats_gateway.app import create_app
from aistats_gateway.settings import load_settings
from tests.support.gateway import Gateway

# Generated cases per operation (the fuzzing phase draws positive and negative cases from one pool);
# the examples and coverage phases add their explicit cases on top.
MAX_EXAMPLES = 75
SEED = 20240601

CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection", "upgrade", "expect"})
CHECKS = [getattr(schemathesis.checks, name) for name in CHECK_NAMES]

SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    # Requests to a real server are slow for Hypothesis' taste, and negative generation filters a lot.
    suppress_health_check=list(HealthCheck),
)


def _document() -> dict[str, Any]:
    """The OpenAPI document of an app built from this code (no server, no database connection)."""
    tmp = tempfile.mkdtemp(prefix="aistats-openapi-")
    try:
        app = create_app(load_settings(data_dir=tmp, database_url=f"sqlite+aiosqlite:///{tmp}/openapi.db",
                                       key_pepper="openapi", signing_secret="openapi"))
        return app.openapi()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


DOCUMENT = _document()
CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    "suppress-health-check": ["all"],
})
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@schema.parametrize()
@SETTINGS
def test_openapi_conformance(case: schemathesis.Case, gateway: Gateway, key: str) -> None:
    if case.headers:
        # Framing headers (a fuzzed Content-Length …) are answered by the HTTP server (uvicorn's own
        # text/plain 400) before the request reaches the application, which this test is about.
        case.headers = {k: v for k, v in case.headers.items() if k.lower() not in FRAMING_HEADERS}
    case.call_and_validate(
        base_url=gateway.base_url,
        headers={"Authorization": f"Bearer {key}"},
        checks=CHECKS,
        timeout=30,
    )


def test_served_document_is_the_tested_one(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.base_url}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.json() == DOCUMENT


def test_every_served_route_is_documented(gateway: Gateway) -> None:
    """Routes left out of the document would escape this test: only internal ones may be."""
    documented = {(m.upper(), p) for p, ops in DOCUMENT["paths"].items() for m in ops}
    served = {
        (m, route.path)
        for route in gateway.app.routes
        if getattr(route, "include_in_schema", False)
        for m in (getattr(route, "methods", None) or ())
        if m != "HEAD"
    }
    assert served <= documented, sorted(served - documented)
    for path in ("/v1/models", "/v1/videos/models", "/v1/batches/models", "/healthz", "/readyz", "/metrics"):
        assert ("GET", path) in documented

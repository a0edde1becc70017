"""The one place the services' domain errors become HTTP answers (OpenAI error shape).

Services (routing, billing …) raise plain exceptions carrying fields; only this module decides the
status, message and code a client sees.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from aistats_gateway.billing import errors as billing_errors
from aistats_gateway.billing.ledger import usd
from aistats_gateway.http.errors import error_response
from aistats_gateway.routing.errors import RoutingError
from aistats_gateway.webhooks.service import SubscriptionError


async def _routing(request: Request, exc: RoutingError) -> JSONResponse:
    return error_response(400, exc.message, param=exc.param, code=exc.code)


async def _insufficient(request: Request, exc: billing_errors.InsufficientCredits) -> JSONResponse:
    return error_response(402, f"Insufficient credits: this request needs {usd(exc.needed)} USD held, "
                          f"{usd(max(exc.available, 0))} USD is available (short by {usd(exc.shortfall)} USD).",
                          code="insufficient_credits")


async def _spend_limit(request: Request, exc: billing_errors.SpendLimitExceeded) -> JSONResponse:
    return error_response(402, f"This key's {exc.period} spend limit of {usd(exc.limit)} USD would be exceeded "
                          f"({usd(exc.used)} USD used, this request needs {usd(exc.needed)} USD).",
                          code=f"{exc.period}_spend_limit_exceeded")


async def _subscription(request: Request, exc: SubscriptionError) -> JSONResponse:
    return error_response(400, exc.message, param=exc.param, code=exc.code)


def install_domain_errors(app: FastAPI) -> None:
    app.add_exception_handler(RoutingError, _routing)  # type: ignore[arg-type]
    app.add_exception_handler(SubscriptionError, _subscription)  # type: ignore[arg-type]
    app.add_exception_handler(billing_errors.InsufficientCredits, _insufficient)  # type: ignore[arg-type]
    app.add_exception_handler(billing_errors.SpendLimitExceeded, _spend_limit)  # type: ignore[arg-type]

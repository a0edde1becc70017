"""The one place the services' domain errors become HTTP answers (OpenAI error shape).

Services (routing, billing …) raise plain exceptions carrying fields; only this module decides the
status, message and code a client sees.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from aistats_gateway.billing import errors as billing_errors
from aistats_gateway.billing.ledger import usd
from aistats_gateway.http.errors import APIError, error_response
from aistats_gateway.routing.errors import RoutingError
from aistats_gateway.webhooks.service import SubscriptionError

DOMAIN_ERRORS = (RoutingError, SubscriptionError, billing_errors.InsufficientCredits,
                 billing_errors.SpendLimitExceeded)


def to_api_error(exc: Exception) -> APIError:
    """The HTTP answer of one domain error (for routes that render errors in another protocol's shape)."""
    if isinstance(exc, (RoutingError, SubscriptionError)):
        return APIError(400, exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, billing_errors.InsufficientCredits):
        return APIError(402, f"Insufficient credits: this request needs {usd(exc.needed)} USD held, "
                        f"{usd(max(exc.available, 0))} USD is available (short by {usd(exc.shortfall)} USD).",
                        code="insufficient_credits")
    if isinstance(exc, billing_errors.SpendLimitExceeded):
        return APIError(402, f"This key's {exc.period} spend limit of {usd(exc.limit)} USD would be exceeded "
                        f"({usd(exc.used)} USD used, this request needs {usd(exc.needed)} USD).",
                        code=f"{exc.period}_spend_limit_exceeded")
    raise TypeError(f"not a domain error: {exc!r}")


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    e = to_api_error(exc)
    return error_response(e.status, e.message, param=e.param, code=e.code)


def install_domain_errors(app: FastAPI) -> None:
    for cls in DOMAIN_ERRORS:
        app.add_exception_handler(cls, _handle)

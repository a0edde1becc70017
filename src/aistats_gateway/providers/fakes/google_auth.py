"""OAuth2 for the fake Google Veo APIs (:mod:`.google`): the JWT-bearer assertion check of Google's token
endpoint and its ``{error, error_description}`` answers."""
from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from starlette.responses import JSONResponse

from .google_state import FakeGoogleState

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description}, status_code=self.status)


def verify_assertion(state: FakeGoogleState, assertion: str, token_url: str) -> dict[str, Any]:
    """Check a JWT-bearer assertion as Google's token endpoint does; returns its claims."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError("invalid_request", "Invalid JWT: expected three dot-separated parts.")
    try:
        header, claims = json.loads(_b64url_decode(parts[0])), json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise OAuthError("invalid_request", "Invalid JWT: cannot decode.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "Invalid JWT: the algorithm must be RS256.")
    account = state.service_accounts.get(str(claims.get("iss")))
    if account is None:
        raise OAuthError("invalid_grant", "Invalid grant: account not found")
    if header.get("kid") not in (None, account.private_key_id):
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    try:
        account.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise OAuthError("invalid_grant", "Invalid JWT Signature.") from None
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or exp <= now or iat > now + 300
            or exp - iat > 3600):
        raise OAuthError("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                          "reasonable timeframe. Check your iat and exp values in the JWT claim.")
    # google-auth always names Google's canonical endpoint as the audience, whatever token_uri it posts to.
    if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, token_url):
        raise OAuthError("invalid_grant", "Invalid JWT: Failed audience check. The right audience is "
                                          + GOOGLE_TOKEN_AUDIENCE)
    if SCOPE not in str(claims.get("scope", "")).split():
        raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    return claims

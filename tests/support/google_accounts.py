"""A throwaway Google service account for the Veo tests: an RSA key pair generated here and the
service-account JSON that names it (the Google fake verifies JWT assertions with the public half)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PROJECT = "veo-test-project"
SA_EMAIL = f"gateway@{PROJECT}.iam.gserviceaccount.com"
SA_KEY_ID = "0123456789abcdef"


def rsa_pair() -> tuple[str, bytes]:
    """(private key PEM, public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def service_account(private_pem: str, token_uri: str, key_id: str = SA_KEY_ID) -> dict[str, Any]:
    return {"type": "service_account", "project_id": PROJECT, "private_key_id": key_id, "private_key": private_pem,
            "client_email": SA_EMAIL, "client_id": "1234567890", "token_uri": token_uri}

"""State of the fake Google Veo APIs (:mod:`.google`): operations, service accounts, tokens and the fault
knobs tests set on ``app.state.fake``."""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._common import FakeState, RecordedRequest


@dataclass
class ServiceAccount:
    client_email: str
    private_key_id: str
    public_key: Any  # cryptography RSAPublicKey
    project: str


@dataclass
class Operation:
    name: str
    api: str  # "studio" | "vertex"
    model: str
    created_mono: float
    render_seconds: float
    width: int
    height: int
    seconds: int
    samples: int
    prompt: str
    fail: tuple[str, Any, str] | None = None  # ("error", rpc code, message) | ("filtered", count, reason)
    storage_uri: str | None = None
    project: str | None = None
    location: str | None = None
    file_ids: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass
class FakeGoogleState(FakeState):
    api_key: str = "AIza-fake-gemini-key"
    project: str = "fake-project"
    require_generate_audio: bool = True  # Veo 3 on Vertex needs parameters.generateAudio
    reject_unknown_params: bool = True
    token_lifetime_seconds: int = 3599
    # fault injection (also FakeState's: fail_next_creates/fail_status, create_delay_seconds, and
    # rate_limit_next: the next N authenticated API calls, not the token endpoint, answer 429)
    retry_delay_seconds: float = 1.0
    block_prompts: list[str] = field(default_factory=list)  # refused at submit (400, safety message)
    filter_prompts: list[str] = field(default_factory=list)  # done with raiMediaFilteredCount, no videos
    fail_jobs: bool = False  # operations end with error {code: 13}
    expire_outputs: bool = False  # files / GCS objects are gone
    forget_operations: bool = False  # polling answers 404
    # recorded state (and FakeState.requests)
    operations: dict[str, Operation] = field(default_factory=dict)
    files: dict[str, tuple[Operation, int, float]] = field(default_factory=dict)  # id → (op, index, mono created)
    objects: dict[tuple[str, str], tuple[Operation, int]] = field(default_factory=dict)  # (bucket, name)
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → (client_email, unix expiry)
    token_grants: list[dict[str, Any]] = field(default_factory=list)  # verified JWT claims, in order
    signing_secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _default_account: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    RECORDED: ClassVar[tuple[str, ...]] = ("requests", "operations", "files", "objects", "tokens", "token_grants")
    KEPT: ClassVar[tuple[str, ...]] = ("service_accounts", "signing_secret")

    def find_requests(self, method: str | None = None, path: str | None = None,
                      contains: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if method in (None, r.method) and path in (None, r.path)
                and (contains is None or contains in r.path)]

    @property
    def creates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(":predictLongRunning")]

    def register_service_account(self, client_email: str, private_key_id: str, public_key_pem: str | bytes,
                                 project: str | None = None) -> None:
        """Trust a service account: its JWT assertions are verified with this public key (PEM)."""
        from cryptography.hazmat.primitives import serialization

        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        self.service_accounts[client_email] = ServiceAccount(
            client_email, private_key_id, serialization.load_pem_public_key(pem), project or self.project)

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (the next API call answers 401)."""
        self.tokens.clear()

    def default_service_account(self, token_uri: str) -> dict[str, Any]:
        """A service-account JSON (with private key) this fake trusts; generated once, on first use."""
        with self._lock:
            if self._default_account is None:
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric import rsa

                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                email = f"veo-fake@{self.project}.iam.gserviceaccount.com"
                key_id = secrets.token_hex(20)
                pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
                pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
                self.register_service_account(email, key_id, pub, self.project)
                self._default_account = {
                    "type": "service_account", "project_id": self.project, "private_key_id": key_id,
                    "private_key": pem, "client_email": email, "client_id": str(secrets.randbits(64)),
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                    "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                }
            return {**self._default_account, "token_uri": token_uri}

"""SSRF guard: address rules, IP spellings, pinning, redirects, caps, data URLs.

A real HTTP (and HTTPS) server runs on 127.0.0.1 in a thread; a fake resolver maps public-looking
names to it so that the rejection logic, not the network, decides. No internet is used.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistats_gateway.http.ssrf import (
    Fetched,
    GuardPolicy,
    URLRejected,
    check_target,
    check_url,
    fetch,
    parse_data_url,
    pinned_request,
)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\xff\0\0"))
            + chunk(b"IEND", b""))


PNG = _png()
CAP = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host"))
        path, _, query = self.path.partition("?")
        try:
            self._route(path, query)
        except OSError:  # client went away (size/time cap)
            pass

    def _route(self, path: str, query: str) -> None:
        other = self.server.other_port
        if path == "/png":
            self._send(200, PNG)
        elif path == "/text":
            self._send(200, b"<html></html>", "text/html; charset=utf-8")
        elif path == "/missing":
            self._send(404, b"nope", "text/plain")
        elif path == "/huge-declared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(50 * CAP))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif path == "/huge-streamed":  # HTTP/1.0, no Content-Length: close-delimited body
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b"x" * 8192)
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(60):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/redirect":
            self._send(302, b"", "text/plain", Location=query.replace("%3F", "?"))
        elif path == "/redirect-relative":
            self._send(302, b"", "text/plain", Location="/png")
        elif path == "/redirect-other-port":
            self._send(302, b"", "text/plain", Location=f"http://127.0.0.1:{other}/png")
        elif path == "/redirect-metadata":
            self._send(302, b"", "text/plain", Location="http://169.254.169.254/latest/meta-data/")
        elif path == "/redirect-nolocation":
            self._send(302, b"", "text/plain")
        elif path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, b"", "text/plain", Location=f"/chain/{n - 1}" if n > 1 else "/png")
        else:
            self._send(404, b"", "text/plain")


def _serve(tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.hosts = []  # type: ignore[attr-defined]
    server.other_port = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _tls_pair(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a leaf for ``images.example.test``: (server context, client context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("ssrf test CA", ca_key, "ssrf test CA", ca_key, True)
    leaf = cert("images.example.test", leaf_key, "ssrf test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(pem) + leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp / "leaf.pem")
    client_ctx = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server_ctx, client_ctx


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    server_ctx, client_ctx = _tls_pair(tmp_path_factory.mktemp("tls"))
    main, other, tls = _serve(), _serve(), _serve(server_ctx)
    main.other_port = other.server_address[1]  # type: ignore[attr-defined]
    tls.other_port = main.server_address[1]  # type: ignore[attr-defined]
    yield {"main": main, "other": other, "tls": tls, "port": main.server_address[1],
           "other_port": other.server_address[1], "tls_port": tls.server_address[1], "client_ctx": client_ctx}
    for s in (main, other, tls):
        s.shutdown()
        s.server_close()


class FakeResolver:
    """Maps names to IP strings; records lookups; unknown names fail like getaddrinfo."""

    def __init__(self, table: dict[str, list[str]] | None = None, delay: float = 0.0) -> None:
        self.table = table or {}
        self.delay = delay
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if self.delay:
            await asyncio.sleep(self.delay)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver must not be called for {host!r}")


HTTP = frozenset({"http", "https"})
LOCAL = GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({"127.0.0.1"}), max_bytes=CAP, timeout_seconds=3)
LOCAL_RESOLVER = FakeResolver({"images.example.test": ["127.0.0.1"], "internal.example.test": ["127.0.0.1"],
                               "other.example.test": ["127.0.0.1"]})


def run_fetch(url: str, policy: GuardPolicy = LOCAL, verify: Any = True, **kw: Any) -> Fetched:
    async def go() -> Fetched:
        async with httpx.AsyncClient(trust_env=False, verify=verify, follow_redirects=True,
                                     headers={"Authorization": "Bearer provider-secret"}) as client:
            return await fetch(client, url, policy, **kw)
    return asyncio.run(go())


def rejected(code: str | set[str], fn: Any, *args: Any, **kw: Any) -> URLRejected:
    with pytest.raises(URLRejected) as info:
        result = fn(*args, **kw)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert info.value.code in ({code} if isinstance(code, str) else code), info.value.reason
    assert info.value.reason
    return info.value


# --- address rules -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://127.0.0.1/", "https://127.0.0.2:8443/x", "https://127.1/", "https://2130706433/",
    "https://0x7f.0.0.1/", "https://0177.1/", "https://0x7f000001/", "https://017700000001/",
    "https://127.0.0.1./", "https://10.0.0.1/", "https://10.1/", "https://172.16.5.4/", "https://172.31.255.255/",
    "https://192.168.1.1/", "https://169.254.169.254/latest/meta-data/", "https://169.254.1.1/",
    "https://100.64.0.1/", "https://100.127.255.254/", "https://0.0.0.0/", "https://0/", "https://224.0.0.1/",
    "https://239.255.255.250/", "https://255.255.255.255/", "https://240.0.0.1/", "https://198.18.0.1/",
    "https://[::1]/", "https://[::]/", "https://[0:0:0:0:0:0:0:1]/", "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/", "https://[::ffff:169.254.169.254]/", "https://[::ffff:10.0.0.1]/",
    "https://[::127.0.0.1]/", "https://[::ffff:0:7f00:1]/", "https://[fe80::1]/", "https://[fe80::1%25eth0]/",
    "https://[fc00::1]/", "https://[fd12:3456::1]/", "https://[fd00:ec2::254]/", "https://[fec0::1]/",
    "https://[ff02::1]/", "https://[2002:7f00:1::]/", "https://[2002:a9fe:a9fe::1]/",
    "https://[64:ff9b::a9fe:a9fe]/", "https://[64:ff9b::7f00:1]/", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "https://[2001:db8::1]/", "https://localhost/", "https://LOCALHOST./", "https://api.localhost/",
    "https://metadata.google.internal/computeMetadata/v1/", "https://METADATA.Google.Internal./",
    "https://metadata/", "https://instance-data/", "https://metadata.azure.internal/",
])
def test_private_addresses_and_spellings_rejected(url: str) -> None:
    rejected("private_address", check_url, url, GuardPolicy(), resolver=no_dns)


@pytest.mark.parametrize("url", ["https://0177.0.0.1/", "https://127.000.000.001/", "https://0127.0.0.1/"])
def test_dotted_quads_with_leading_zeros_never_pass(url: str) -> None:
    # httpx refuses these outright (so they could never be sent); either way they must not pass
    rejected({"invalid_url", "private_address"}, check_url, url, GuardPolicy(), resolver=no_dns)


@pytest.mark.parametrize("url,ips", [
    ("https://8.8.8.8/", ["8.8.8.8"]),
    ("https://0x08.0x08.0x08.0x08/", ["8.8.8.8"]),
    ("https://134744072/", ["8.8.8.8"]),
    ("https://[2606:4700::1111]/", ["2606:4700::1111"]),
    ("https://[::ffff:8.8.8.8]/", ["::ffff:808:808"]),
    ("https://[2002:808:808::1]/", ["2002:808:808::1"]),
    ("https://100.63.255.255/", ["100.63.255.255"]),
    ("https://172.32.0.1:8443/a?b#c", ["172.32.0.1"]),
])
def test_public_literals_allowed(url: str, ips: list[str]) -> None:
    assert asyncio.run(check_url(url, GuardPolicy(), resolver=no_dns)) == ips


def test_names_resolve_once_and_any_private_answer_rejects() -> None:
    r = FakeResolver({"cdn.example.test": ["93.184.216.34", "2606:2800:220:1::1946", "93.184.216.34"],
                      "mixed.example.test": ["93.184.216.34", "10.0.0.5"],
                      "mapped.example.test": ["2606:2800:220:1::1", "::ffff:192.168.0.1"],
                      "v6local.example.test": ["fe80::1%eth0"],
                      "empty.example.test": []})
    assert asyncio.run(check_url("https://cdn.example.test/a.png", GuardPolicy(), resolver=r)) == [
        "93.184.216.34", "2606:2800:220:1::1946"]
    assert r.calls == ["cdn.example.test"]
    for host in ("mixed", "mapped", "v6local"):
        rejected("private_address", check_url, f"https://{host}.example.test/", GuardPolicy(), resolver=r)
    rejected("unresolvable_host", check_url, "https://empty.example.test/", GuardPolicy(), resolver=r)
    rejected("unresolvable_host", check_url, "https://nxdomain.example.test/", GuardPolicy(), resolver=r)
    sync_resolver = lambda host, port: ["8.8.4.4"]
    assert asyncio.run(check_url("https://sync.example.test/", GuardPolicy(), resolver=sync_resolver)) == ["8.8.4.4"]


@pytest.mark.parametrize("url,code", [
    ("http://8.8.8.8/", "scheme_not_allowed"), ("ftp://8.8.8.8/", "scheme_not_allowed"),
    ("file:///etc/passwd", "scheme_not_allowed"), ("gopher://8.8.8.8:70/", "scheme_not_allowed"),
    ("https://user:pass@8.8.8.8/", "userinfo_not_allowed"), ("https://user@cdn.example.test/", "userinfo_not_allowed"),
    ("https://:pw@cdn.example.test/", "userinfo_not_allowed"),
    ("", "invalid_url"), ("not a url", "invalid_url"), ("https:///path", "invalid_url"),
    ("https://[::1/", "invalid_url"),
])
def test_scheme_userinfo_and_malformed(url: str, code: str) -> None:
    rejected(code, check_url, url, GuardPolicy(), resolver=no_dns)


def test_http_allowed_only_when_listed() -> None:
    assert asyncio.run(check_url("http://8.8.8.8/", GuardPolicy(schemes=HTTP), resolver=no_dns)) == ["8.8.8.8"]
    rejected("scheme_not_allowed", check_target, "http://8.8.8.8/hook", GuardPolicy(), resolver=no_dns)


def test_allow_private_and_allowed_hosts() -> None:
    dev = GuardPolicy(allow_private=True)
    assert asyncio.run(check_url("https://10.0.0.1/", dev, resolver=no_dns)) == ["10.0.0.1"]
    assert asyncio.run(check_url("https://[::1]/", dev, resolver=no_dns)) == ["::1"]
    # the escape hatch never opens cloud metadata
    for url in ("https://169.254.169.254/", "https://[::ffff:169.254.169.254]/", "https://metadata.google.internal/"):
        rejected("private_address", check_url, url, dev, resolver=no_dns)
    r = FakeResolver({"svc.internal": ["10.1.2.3"]})
    ops = GuardPolicy(allowed_hosts=frozenset({"svc.internal", "127.0.0.1:9000", "::1"}))
    assert asyncio.run(check_url("https://svc.internal/", ops, resolver=r)) == ["10.1.2.3"]
    assert asyncio.run(check_url("https://127.0.0.1:9000/", ops, resolver=no_dns)) == ["127.0.0.1"]
    assert asyncio.run(check_url("https://[::1]:5/", ops, resolver=no_dns)) == ["::1"]
    rejected("private_address", check_url, "https://127.0.0.1:9001/", ops, resolver=no_dns)
    rejected("private_address", check_url, "https://other.internal/", ops,
             resolver=FakeResolver({"other.internal": ["10.1.2.3"]}))
    rejected("userinfo_not_allowed", check_url, "https://u:p@svc.internal/", ops, resolver=r)
    # an allow-listed IP also matches its odd spellings (they are the same address)
    assert asyncio.run(check_url("https://2130706433:9000/", ops, resolver=no_dns)) == ["127.0.0.1"]


def test_check_target_for_webhooks() -> None:
    r = FakeResolver({"hooks.example.test": ["93.184.216.34"], "evil.example.test": ["127.0.0.1"]})
    assert asyncio.run(check_target("https://hooks.example.test/h", GuardPolicy(), resolver=r)) is None
    rejected("private_address", check_target, "https://evil.example.test/h", GuardPolicy(), resolver=r)
    rejected("timeout", check_target, "https://hooks.example.test/h", GuardPolicy(timeout_seconds=0.2),
             resolver=FakeResolver({"hooks.example.test": ["93.184.216.34"]}, delay=5))


def test_pinned_request_keeps_host_and_sni() -> None:
    req = pinned_request("POST", "https://Hooks.Example.test:8443/h?x=1", "2606:2800:220:1::1", content=b"{}")
    assert str(req.url) == "https://[2606:2800:220:1::1]:8443/h?x=1"
    assert req.headers["host"] == "hooks.example.test:8443"
    assert req.extensions["sni_hostname"] == "hooks.example.test"
    plain = pinned_request("GET", "http://bücher.example.test/", "93.184.216.34")
    assert plain.headers["host"] == "xn--bcher-kva.example.test" and "sni_hostname" not in plain.extensions


# --- fetching from a real local server -----------------------------------------------------------

def test_happy_path_pins_checked_ip(servers: dict[str, Any]) -> None:
    r = FakeResolver({"images.example.test": ["127.0.0.1"]})
    policy = GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({"images.example.test"}), max_bytes=CAP)
    url = f"http://images.example.test:{servers['port']}/png"
    got = run_fetch(url, policy, resolver=r)
    assert got == Fetched(content=PNG, content_type="image/png", final_url=url)
    # the name is unknown to the system resolver: the request can only have gone to the checked IP
    assert r.calls == ["images.example.test"]
    assert servers["main"].hosts[-1] == f"images.example.test:{servers['port']}"


def test_name_resolving_to_loopback_is_not_fetched(servers: dict[str, Any]) -> None:
    before = len(servers["main"].hosts)
    policy = GuardPolicy(schemes=HTTP, max_bytes=CAP)
    rejected("private_address", run_fetch, f"http://images.example.test:{servers['port']}/png", policy,
             resolver=LOCAL_RESOLVER)
    assert len(servers["main"].hosts) == before


def test_https_uses_name_for_sni_and_certificate(servers: dict[str, Any]) -> None:
    r = FakeResolver({"images.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    policy = GuardPolicy(allowed_hosts=frozenset({"images.example.test", "other.example.test"}), max_bytes=CAP)
    port, ctx = servers["tls_port"], servers["client_ctx"]
    got = run_fetch(f"https://images.example.test:{port}/png", policy, verify=ctx, resolver=r)
    assert got.content == PNG
    # the certificate is for images.example.test only: verification really uses the requested name
    rejected("fetch_failed", run_fetch, f"https://other.example.test:{port}/png", policy, verify=ctx, resolver=r)
    # https -> http downgrade on redirect is refused by the default scheme policy
    rejected("scheme_not_allowed", run_fetch, f"https://images.example.test:{port}/redirect-other-port", policy,
             verify=ctx, resolver=r)


def test_redirects_are_rechecked(servers: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{servers['port']}"
    err = rejected("private_address", run_fetch, f"{base}/redirect-metadata")
    assert "169.254.169.254" in err.reason and "Redirect" in err.reason
    only_port = GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({f"127.0.0.1:{servers['port']}"}), max_bytes=CAP)
    rejected("private_address", run_fetch, f"{base}/redirect-other-port", only_port)
    rejected("private_address", run_fetch, f"{base}/redirect?http://internal.example.test:{servers['port']}/png",
             resolver=LOCAL_RESOLVER)
    rejected("private_address", run_fetch, f"{base}/redirect?http://localhost:{servers['port']}/png")
    rejected("private_address", run_fetch, f"{base}/redirect?http://0x7f.1:{servers['other_port']}/png", only_port)
    rejected("userinfo_not_allowed", run_fetch, f"{base}/redirect?http://a:b@127.0.0.1:{servers['port']}/png")
    rejected("scheme_not_allowed", run_fetch, f"{base}/redirect?file:///etc/passwd")
    # allowed when the host (any port) is allow-listed; relative Locations resolve against the current URL
    assert run_fetch(f"{base}/redirect-other-port").final_url == f"http://127.0.0.1:{servers['other_port']}/png"
    assert run_fetch(f"{base}/redirect-relative").final_url == f"{base}/png"


def test_redirect_limits(servers: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{servers['port']}"
    assert run_fetch(f"{base}/chain/3").content == PNG
    rejected("redirect_not_allowed", run_fetch, f"{base}/chain/4")
    no_redirects = GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({"127.0.0.1"}), max_redirects=0)
    rejected("redirect_not_allowed", run_fetch, f"{base}/redirect-relative", no_redirects)
    rejected("redirect_not_allowed", run_fetch, f"{base}/redirect-nolocation")


def test_size_caps(servers: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{servers['port']}"
    # Both are refused as too_large, not timeout: had the guard waited for the declared body (which never
    # comes), the policy's 10 s timeout would have answered first. (No elapsed-time bound: it races load.)
    assert "Content-Length" in rejected("too_large", run_fetch, f"{base}/huge-declared").reason
    assert "body" in rejected("too_large", run_fetch, f"{base}/huge-streamed").reason
    exact = GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({"127.0.0.1"}), max_bytes=len(PNG))
    assert run_fetch(f"{base}/png", exact).content == PNG
    rejected("too_large", run_fetch, f"{base}/png",
             GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({"127.0.0.1"}), max_bytes=len(PNG) - 1))


def test_time_caps(servers: dict[str, Any]) -> None:
    quick = GuardPolicy(schemes=HTTP, allowed_hosts=frozenset({"127.0.0.1", "images.example.test"}),
                        timeout_seconds=0.5)
    # Each is cut at the 0.5 s timeout, well before the server would have finished (the body trickles for
    # 3 s, the resolver answers after 30 s): the bounds leave several seconds for a loaded machine.
    t0 = time.monotonic()
    rejected("timeout", run_fetch, f"http://127.0.0.1:{servers['port']}/slow", quick)
    assert time.monotonic() - t0 < 3
    slow_dns = FakeResolver({"images.example.test": ["127.0.0.1"]}, delay=30)
    t0 = time.monotonic()
    rejected("timeout", run_fetch, f"http://images.example.test:{servers['port']}/png", quick, resolver=slow_dns)
    assert time.monotonic() - t0 < 15


def test_content_type_status_and_connect_errors(servers: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{servers['port']}"
    rejected("not_an_image", run_fetch, f"{base}/text")
    assert run_fetch(f"{base}/text", accept_prefix=None).content_type == "text/html"
    rejected("unexpected_content_type", run_fetch, f"{base}/png", accept_prefix="video/")
    rejected("bad_status", run_fetch, f"{base}/missing")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    rejected("fetch_failed", run_fetch, f"http://127.0.0.1:{dead}/png")
    rejected("scheme_not_allowed", run_fetch, f"{base}/png", GuardPolicy(allowed_hosts=frozenset({"127.0.0.1"})))


def test_client_defaults_are_not_forwarded(servers: dict[str, Any]) -> None:
    seen: list[httpx.Request] = []

    async def go() -> None:
        async def hook(request: httpx.Request) -> None:
            seen.append(request)
        async with httpx.AsyncClient(trust_env=False, headers={"Authorization": "Bearer secret"},
                                     event_hooks={"request": [hook]}) as client:
            await fetch(client, f"http://127.0.0.1:{servers['port']}/png", LOCAL)
    asyncio.run(go())
    assert "authorization" not in seen[0].headers and seen[0].url.host == "127.0.0.1"


# --- data URLs -----------------------------------------------------------------------------------

def test_data_urls() -> None:
    b64 = base64.b64encode(PNG).decode()
    got = parse_data_url(f"data:image/png;base64,{b64}", max_bytes=CAP)
    assert got.content == PNG and got.content_type == "image/png"
    assert parse_data_url(f"DATA:Image/PNG;name=a.png;base64,{b64.rstrip('=')}\n", max_bytes=CAP).content == PNG
    assert run_fetch(f"data:image/png;base64,{b64}", GuardPolicy()).content == PNG  # no network involved
    rejected("not_an_image", parse_data_url, f"data:text/plain;base64,{b64}", max_bytes=CAP)
    rejected("not_an_image", parse_data_url, f"data:;base64,{b64}", max_bytes=CAP)
    rejected("bad_data_url", parse_data_url, "data:image/png;base64,@@not*base64!!", max_bytes=CAP)
    rejected("bad_data_url", parse_data_url, "data:image/png;base64,", max_bytes=CAP)
    rejected("bad_data_url", parse_data_url, "data:image/png;base64", max_bytes=CAP)
    rejected("bad_data_url", parse_data_url, "https://example.test/a.png", max_bytes=CAP)
    rejected("too_large", parse_data_url, f"data:image/png;base64,{b64}", max_bytes=len(PNG) - 1)
    rejected("too_large", parse_data_url, "data:image/png;base64," + "A" * 4_000_000, max_bytes=CAP)
    assert parse_data_url("data:image/svg+xml,%3Csvg%2F%3E", max_bytes=CAP).content == b"<svg/>"


"""SSRF guard for every URL a client hands the gateway (image references, webhook targets).

How it works
------------
* **Parsing.** The URL is parsed once with :class:`httpx.URL` -- the same parser that later sends
  the request -- so there is no differential between what is checked and what is fetched.  Only the
  policy's schemes are accepted (``https`` by default), and userinfo (``user:pass@``) is refused.
* **Resolution.** IP literals are normalised with :mod:`ipaddress`; legacy IPv4 spellings that
  ``inet_aton`` accepts (``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``, ``127.1``) are decoded
  here, so they never depend on the resolver.  Names go through ``loop.getaddrinfo`` (or an injected
  *resolver*) and the request is rejected if **any** returned address is non-public: loopback,
  RFC 1918 / ULA, link-local (incl. 169.254.169.254), CGNAT, multicast, reserved, unspecified,
  documentation ranges, and IPv4 embedded in IPv6 (``::ffff:a.b.c.d``, IPv4-compatible, SIIT, 6to4
  ``2002::/16``, NAT64 ``64:ff9b::/96``; Teredo sits in the blocked ``2001::/23``).  Well-known
  metadata / localhost hostnames are refused before any lookup.
* **DNS rebinding.** A name is resolved exactly once per hop and the connection goes to the IP that
  was checked: the URL's host is rewritten to that IP, the original ``Host`` header is kept, and for
  HTTPS the ``sni_hostname`` request extension carries the real name so that SNI *and certificate
  verification* still use it.  Nothing re-resolves the name, so a rebinding DNS server cannot swap
  the address between check and connect.  Webhook senders should do the same via
  :func:`pinned_request` with the IPs returned by :func:`check_url`.
* **Redirects** are never auto-followed; up to ``max_redirects`` Locations are re-checked with the
  same rules (an unsafe target keeps its specific code, e.g. ``private_address``).
* **Caps.** The body is streamed and aborted past ``max_bytes`` (also rejected early on a larger
  ``Content-Length``); ``timeout_seconds`` bounds the whole operation, DNS and redirects included.

Codes: invalid_url, scheme_not_allowed, userinfo_not_allowed, private_address, unresolvable_host,
redirect_not_allowed, too_large, timeout, fetch_failed, bad_status, not_an_image,
unexpected_content_type, bad_data_url.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> IP strings``; may be sync or async.  Raise ``OSError`` for "no such host".
Resolver = Callable[[str, int], Awaitable[Iterable[str]] | Iterable[str]]


class URLRejected(Exception):
    """A URL (or what it served) is not acceptable. ``code`` is machine-readable, ``reason`` human."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class GuardPolicy:
    schemes: frozenset[str] = frozenset({"https"})
    #: Disables the address checks (dev/test). Cloud metadata addresses and names stay blocked.
    allow_private: bool = False
    #: Exact hostnames / IP literals (or ``host:port``, ``[v6]:port``) exempt from address checks.
    allowed_hosts: frozenset[str] = frozenset()
    max_bytes: int = 25 * 1024 * 1024
    timeout_seconds: float = 10.0
    max_redirects: int = 3


@dataclass(frozen=True)
class Fetched:
    content: bytes
    content_type: str
    final_url: str


_BLOCKED_NETS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "64:ff9b:1::/48",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)]
_METADATA_IPS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "100.100.100.200", "fd00:ec2::254",
))
_METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com",
})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_REDIRECTS = {301, 302, 303, 307, 308}
_HEX, _OCT, _DEC = re.compile(r"0[xX][0-9a-fA-F]*"), re.compile(r"0[0-7]+"), re.compile(r"[1-9][0-9]*|0")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _SIIT or (int(ip) >> 32 == 0 and int(ip) > 1):  # last: IPv4-compatible
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_metadata(ip: IPAddress) -> bool:
    v4 = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return ip in _METADATA_IPS or (v4 is not None and v4 in _METADATA_IPS)


def _is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = _embedded_v4(ip)
        if v4 is not None:
            return _is_public(v4)
        if ip.is_site_local:
            return False
    if any(ip in net for net in _BLOCKED_NETS if net.version == ip.version):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_private
                                 or ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Decode what ``inet_aton`` accepts: 1-4 dot parts, each decimal, 0-octal or 0x-hex."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums: list[int] = []
    for p in parts:
        if _HEX.fullmatch(p):
            nums.append(int(p[2:] or "0", 16))
        elif _OCT.fullmatch(p):
            nums.append(int(p, 8))
        elif _DEC.fullmatch(p):
            nums.append(int(p, 10))
        else:
            return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return _legacy_ipv4(host)


async def _default_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _parse(url: str, policy: GuardPolicy) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise URLRejected("invalid_url", f"URL could not be parsed: {exc}") from None
    if not parsed.scheme:
        raise URLRejected("invalid_url", "URL has no scheme.")
    if parsed.scheme not in policy.schemes:
        allowed = ", ".join(sorted(policy.schemes)) or "none"
        raise URLRejected("scheme_not_allowed", f"URL scheme {parsed.scheme or '(none)'!r} is not allowed "
                                                f"(allowed: {allowed}).")
    if parsed.userinfo:
        raise URLRejected("userinfo_not_allowed", "URLs with embedded credentials (user:pass@) are not allowed.")
    if not parsed.raw_host:
        raise URLRejected("invalid_url", "URL has no host.")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise URLRejected("invalid_url", f"URL port {parsed.port} is out of range.")
    return parsed


def _host_allowed(host: str, port: int, policy: GuardPolicy) -> bool:
    if not policy.allowed_hosts:
        return False
    ip = _parse_ip(host)
    names = {host} if ip is None else {host, str(ip)}
    names |= {f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names}
    return bool(names & {h.lower().rstrip(".") for h in policy.allowed_hosts})


async def _check(parsed: httpx.URL, policy: GuardPolicy, resolver: Resolver | None) -> list[str]:
    host = parsed.raw_host.decode("ascii").lower()
    name = host.rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    exempt = _host_allowed(name, port, policy)
    if not exempt and (name in _METADATA_HOSTS or name == "localhost" or name.endswith(".localhost")):
        raise URLRejected("private_address", f"Host {name!r} is a local or cloud-metadata name.")
    literal = _parse_ip(name)
    if literal is not None:
        ips: list[IPAddress] = [literal]
    else:
        try:
            result = (resolver or _default_resolver)(name, port)
            raw = list(await result if inspect.isawaitable(result) else result)
            ips = [ipaddress.ip_address(str(a).split("%", 1)[0]) for a in raw]
        except (OSError, UnicodeError, ValueError) as exc:
            raise URLRejected("unresolvable_host", f"Host {name!r} could not be resolved: {exc}") from None
        if not ips:
            raise URLRejected("unresolvable_host", f"Host {name!r} did not resolve to any address.")
    if not exempt:
        for ip in ips:
            if _is_metadata(ip) or not (policy.allow_private or _is_public(ip)):
                raise URLRejected("private_address", f"Host {name!r} resolves to non-public address {ip}.")
    return list(dict.fromkeys(str(ip) for ip in ips))


async def check_url(url: str, policy: GuardPolicy, *, resolver: Resolver | None = None) -> list[str]:
    """Validate *url*; return the resolved, allowed IPs (connect only to these). Raises URLRejected."""
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            return await _check(_parse(url, policy), policy, resolver)
    except TimeoutError:
        raise URLRejected("timeout", f"Resolving the URL took longer than {policy.timeout_seconds:g}s.") from None


async def check_target(url: str, policy: GuardPolicy, *, resolver: Resolver | None = None) -> None:
    """Validate a POST target (webhook). Prefer ``check_url`` + :func:`pinned_request` to also pin the IP."""
    await check_url(url, policy, resolver=resolver)


def pinned_request(method: str, url: str | httpx.URL, ip: str, *, headers: dict[str, str] | None = None,
                   content: bytes | None = None, timeout: float | None = None) -> httpx.Request:
    """Build a request that connects to *ip* while keeping the URL's ``Host`` header and TLS name.

    Send it with ``client.send(req, follow_redirects=False, auth=None)``; the client's default
    headers/cookies are not added (it is built without ``client.build_request``).
    """
    parsed = httpx.URL(url)
    hdrs = httpx.Headers(headers or {})
    hdrs.setdefault("Host", parsed.netloc.decode("ascii"))
    ext: dict[str, object] = {}
    if timeout is not None:
        ext["timeout"] = httpx.Timeout(timeout).as_dict()
    host = parsed.raw_host.decode("ascii")
    if parsed.scheme == "https" and _parse_ip(host) is None:
        ext["sni_hostname"] = host.rstrip(".")
    return httpx.Request(method, parsed.copy_with(host=ip), headers=hdrs, content=content, extensions=ext)


#: Percent-escapes a non-base64 ``data:`` URL may hold (decoding work is bounded before it starts).
MAX_DATA_URL_ESCAPES = 1_000_000
_DECODE_CHUNK = 1 << 20  # decode in slices so no single call holds the GIL for long


def parse_data_url(url: str | bytes | memoryview, *, accept_prefix: str = "image/", max_bytes: int) -> Fetched:
    """Decode ``data:<mime>[;params][;base64],<payload>``; enforce the MIME prefix and size cap.

    The decoded size and (for percent-encoding) the number of escapes are bounded *before* any
    decoding, the payload is never copied whole, and decoding goes slice by slice (so no single call
    holds the GIL for long); call it from a worker thread for large URLs. ``url`` may be bytes (a
    view of the request body) so a large URL never becomes one large ``str``.
    """
    if not isinstance(url, str):
        return _parse_data_bytes(memoryview(url), accept_prefix, max_bytes)
    comma = url.find(",", 0, 1024)
    if url[:5].lower() != "data:" or comma < 0:
        raise URLRejected("bad_data_url", "Not a data URL (expected data:<mime>;base64,<data>).")
    params = [p.strip() for p in url[5:comma].split(";")]
    mime = (params[0] or "text/plain").lower()
    is_b64 = any(p.lower() == "base64" for p in params[1:])
    if not mime.startswith(accept_prefix.lower()):
        raise _content_type_error(mime, accept_prefix)
    start = comma + 1
    if is_b64:
        if (len(url) - start) * 3 // 4 > max_bytes + 2 and not _has_space(url, start):
            raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
    else:
        escapes = url.count("%", start)
        if escapes > MAX_DATA_URL_ESCAPES:
            raise URLRejected("too_large", f"Data URL has {escapes:,} percent-escapes; at most "
                                           f"{MAX_DATA_URL_ESCAPES:,} are allowed (use base64).")
        if len(url) - start - 2 * escapes > max_bytes:
            raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
    try:
        data = _b64_decode(url, start, max_bytes) if is_b64 else _percent_decode(url, start)
    except (binascii.Error, ValueError) as exc:
        raise URLRejected("bad_data_url", f"Data URL payload is not valid base64: {exc}") from None
    if not data:
        raise URLRejected("bad_data_url", "Data URL payload is empty.")
    if len(data) > max_bytes:
        raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
    return Fetched(content=data, content_type=mime, final_url=url)


def _parse_data_bytes(mv: memoryview, accept_prefix: str, max_bytes: int) -> Fetched:
    head = bytes(mv[:1024])
    comma = head.find(b",")
    if head[:5].lower() != b"data:" or comma < 0:
        raise URLRejected("bad_data_url", "Not a data URL (expected data:<mime>;base64,<data>).")
    params = [p.strip() for p in head[5:comma].decode("latin-1").split(";")]
    mime = (params[0] or "text/plain").lower()
    is_b64 = any(p.lower() == "base64" for p in params[1:])
    if not mime.startswith(accept_prefix.lower()):
        raise _content_type_error(mime, accept_prefix)
    start, size, step = comma + 1, len(mv), _DECODE_CHUNK * 4
    out = bytearray()
    try:
        if is_b64:
            spaced = any(any(c in bytes(mv[i:i + step]) for c in (b" ", b"\t", b"\r", b"\n"))
                         for i in range(start, size, step))
            if not spaced and (size - start) * 3 // 4 > max_bytes + 2:
                raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
            carry = b""
            for i in range(start, size, step):
                piece = bytes(mv[i:i + step])
                if spaced:
                    piece = piece.translate(None, b" \t\r\n")
                piece = carry + piece
                usable = len(piece) - len(piece) % 4
                carry = piece[usable:]
                out += base64.b64decode(piece[:usable], validate=True)
                if len(out) > max_bytes:
                    raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
            if carry:
                out += base64.b64decode(carry + b"=" * (-len(carry) % 4), validate=True)
        else:
            escapes = sum(bytes(mv[i:i + step]).count(b"%") for i in range(start, size, step))
            if escapes > MAX_DATA_URL_ESCAPES:
                raise URLRejected("too_large", f"Data URL has {escapes:,} percent-escapes; at most "
                                               f"{MAX_DATA_URL_ESCAPES:,} are allowed (use base64).")
            if size - start - 2 * escapes > max_bytes:
                raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
            i = start
            while i < size:
                end = min(i + _DECODE_CHUNK, size)
                while end < size and b"%" in bytes(mv[end - 2:end]):
                    end += 1  # never split an escape
                out += unquote_to_bytes(bytes(mv[i:end]))
                i = end
    except (binascii.Error, ValueError) as exc:
        raise URLRejected("bad_data_url", f"Data URL payload is not valid base64: {exc}") from None
    if not out:
        raise URLRejected("bad_data_url", "Data URL payload is empty.")
    if len(out) > max_bytes:
        raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
    return Fetched(content=bytes(out), content_type=mime, final_url=f"data:{mime}")


def _has_space(text: str, start: int) -> bool:
    return any(text.find(c, start) >= 0 for c in " \t\r\n")


def _b64_decode(url: str, start: int, max_bytes: int) -> bytes:
    out = bytearray()
    carry = ""
    step = _DECODE_CHUNK * 4
    spaced = _has_space(url, start)
    for i in range(start, len(url), step):
        piece = url[i:i + step]
        if spaced:
            piece = "".join(piece.split())
        piece = carry + piece
        usable = len(piece) - len(piece) % 4
        carry = piece[usable:]
        out += base64.b64decode(piece[:usable], validate=True)
        if len(out) > max_bytes:
            raise URLRejected("too_large", f"Data URL payload exceeds {max_bytes} bytes.")
    if carry:
        out += base64.b64decode(carry + "=" * (-len(carry) % 4), validate=True)
    return bytes(out)


def _percent_decode(url: str, start: int) -> bytes:
    out = bytearray()
    i = start
    while i < len(url):
        end = min(i + _DECODE_CHUNK, len(url))
        while end < len(url) and "%" in url[end - 2:end]:
            end += 1  # never split an escape
        out += unquote_to_bytes(url[i:end])
        i = end
    return bytes(out)


def _content_type_error(content_type: str, prefix: str) -> URLRejected:
    code = "not_an_image" if prefix.lower().startswith("image") else "unexpected_content_type"
    return URLRejected(code, f"Content type {content_type or '(none)'!r} is not {prefix}*.")


async def _send_pinned(client: httpx.AsyncClient, url: httpx.URL, ips: list[str],
                       policy: GuardPolicy) -> httpx.Response:
    last: Exception | None = None
    for ip in ips:  # every IP has passed the checks; fall back across them on connect errors only
        req = pinned_request("GET", url, ip, timeout=policy.timeout_seconds,
                             headers={"Accept-Encoding": "identity", "User-Agent": "aistats-gateway"})
        try:
            return await client.send(req, stream=True, follow_redirects=False, auth=None)
        except httpx.ConnectError as exc:
            last = exc
    raise URLRejected("fetch_failed", f"Could not connect to {url.host!r}: {last}")


async def _fetch(client: httpx.AsyncClient, url: str, policy: GuardPolicy, accept_prefix: str | None,
                 resolver: Resolver | None) -> Fetched:
    current = _parse(url, policy)
    for hop in range(policy.max_redirects + 1):
        if hop:
            try:
                current = _parse(str(current), policy)
            except URLRejected as exc:  # an unsafe target keeps its specific code
                raise URLRejected(exc.code, f"Redirect to {str(current)[:200]} rejected: {exc.reason}") from None
            except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
                raise URLRejected("redirect_not_allowed", f"Redirect Location is not a usable URL: {exc}") from None
        try:
            ips = await _check(current, policy, resolver)
        except URLRejected as exc:
            if hop:
                raise URLRejected(exc.code, f"Redirect to {current} rejected: {exc.reason}") from None
            raise
        response = await _send_pinned(client, current, ips, policy)
        try:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise URLRejected("redirect_not_allowed", "Redirect response without a Location header.")
                try:
                    current = current.join(location)
                except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
                    raise URLRejected("redirect_not_allowed", f"Invalid redirect Location: {exc}") from None
                continue
            if not 200 <= response.status_code < 300:
                raise URLRejected("bad_status", f"URL answered HTTP {response.status_code}.")
            content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if accept_prefix is not None and not content_type.startswith(accept_prefix.lower()):
                raise _content_type_error(content_type, accept_prefix)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise URLRejected("too_large", f"Content-Length {declared} exceeds {policy.max_bytes} bytes.")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > policy.max_bytes:
                    raise URLRejected("too_large", f"Response body exceeds {policy.max_bytes} bytes.")
            return Fetched(content=bytes(body), content_type=content_type, final_url=str(current))
        finally:
            await response.aclose()
    raise URLRejected("redirect_not_allowed", f"More than {policy.max_redirects} redirects.")


async def fetch(client: httpx.AsyncClient, url: str, policy: GuardPolicy, *,
                accept_prefix: str | None = "image/", resolver: Resolver | None = None) -> Fetched:
    """GET *url* under *policy* (pinned IPs, manual redirects, size/time caps). ``data:`` URLs are decoded."""
    if url[:5].lower() == "data:":
        return parse_data_url(url, accept_prefix=accept_prefix or "", max_bytes=policy.max_bytes)
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            return await _fetch(client, url, policy, accept_prefix, resolver)
    except (TimeoutError, httpx.TimeoutException):
        raise URLRejected("timeout", f"Fetching the URL took longer than {policy.timeout_seconds:g}s.") from None
    except httpx.HTTPError as exc:
        raise URLRejected("fetch_failed", f"Fetching the URL failed: {exc}") from None
    except (httpx.InvalidURL, ValueError, UnicodeError, OverflowError) as exc:  # not HTTPErrors: a bad Location
        raise URLRejected("redirect_not_allowed", f"The URL redirected to an unusable location: {exc}") from None

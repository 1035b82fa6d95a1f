"""Fetch a post's image by URL without letting the URL reach anything it should not (SSRF).

How the checks hold:

- The URL is parsed once, by httpx, the same parser that sends the request; the parsed URL is what
  is checked and what is fetched. Only http(s), no credentials, no numeric host tricks (``2130706433``,
  ``0x7f.1``, ``0177.0.0.1``: a host whose last label is a number must be a canonical IP literal).
- DNS is resolved once per hop by us, every address is checked, and the request goes to the
  checked IP itself (URL host replaced by the IP, ``Host`` header and TLS SNI/certificate check
  kept on the name). httpx never resolves the name again, so a DNS answer that changes between the
  check and the connect (rebinding) cannot redirect the connection.
- Loopback, private, CGNAT and other non-global ranges are refused unless ``allow_private``;
  link-local (cloud metadata at 169.254.169.254), multicast, unspecified (``0.0.0.0`` reaches
  localhost) and reserved addresses are always refused. IPv6 addresses embedding an IPv4 one
  (mapped ``::ffff:a.b.c.d``, NAT64, 6to4) are judged by the IPv4 address.
- Redirects are followed by hand, each hop checked like the first, at most ``max_redirects``.
- One deadline covers everything (DNS, connects, redirects, body), so a server dripping a byte at a
  time cannot hold a worker; the body is streamed and abandoned past ``max_bytes``; compressed
  bodies are refused rather than inflated.

A caller-supplied client keeps these properties (it is only ever given IP URLs), but should come
from :func:`new_fetch_client`: no environment proxies, no cookies. A pooled TLS connection is keyed
by IP, so two names on one CDN address may share a connection verified for the first name; the
address was checked either way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import string
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from moderator.ingest.errors import IngestError
from moderator.ingest.schema import DeadLetterReason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = frozenset({"http", "https"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_URL_CHARS = 4096
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")  # after IDNA encoding; httpx percent-encodes the rest
_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "moderator-image-fetch/1"}
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


@dataclass(frozen=True)
class FetchPolicy:
    """What an image URL may cost and reach."""

    timeout_s: float = 5.0  # one deadline for the whole fetch, redirects included
    max_bytes: int = 10 * 1024 * 1024
    allow_private: bool = False  # loopback/private ranges (tests, on-prem); never link-local
    max_redirects: int = 3


def _blocked(detail: str) -> IngestError:
    return IngestError(DeadLetterReason.URL_BLOCKED, detail)


def _failed(detail: str) -> IngestError:
    return IngestError(DeadLetterReason.URL_FETCH_FAILED, detail)


def new_fetch_client(policy: FetchPolicy) -> httpx.AsyncClient:
    """An httpx client suited to :func:`fetch_image`: no proxies from the environment, no
    automatic redirects, no cookie jar (a fetch of untrusted URLs must carry no state)."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=policy.timeout_s,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _address_problem(ip: IPAddress, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed."""
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        return _address_problem(inner, allow_private)
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local or (ip.is_reserved and not ip.is_loopback):
        return f"{ip} is an unspecified, multicast, link-local or reserved address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return f"{ip} is a site-local address"
    if not allow_private and not ip.is_global:
        return f"{ip} is not a public address"
    return None


def _ends_in_number(host: str) -> bool:
    """WHATWG's test for an IPv4-like host: the last label is decimal, or hex with 0x."""
    last = host.rstrip(".").rpartition(".")[2].lower()
    if last.startswith("0x"):
        return all(c in string.hexdigits for c in last[2:])
    return last.isascii() and last.isdigit()


def _parse(raw: str, base: httpx.URL | None = None) -> httpx.URL:
    """Parse (and resolve against ``base``, for a redirect) and check everything but the address."""
    if len(raw) > _MAX_URL_CHARS:
        raise _blocked(f"URL longer than {_MAX_URL_CHARS} characters")
    try:
        url = base.join(raw) if base is not None else httpx.URL(raw)
    except (httpx.InvalidURL, ValueError) as exc:  # ValueError: IDNA errors (UnicodeError)
        raise _blocked(f"malformed URL: {exc}") from exc
    if url.scheme not in _SCHEMES:
        raise _blocked(f"scheme {url.scheme!r} is not http(s)")
    if url.userinfo:
        raise _blocked("credentials in URL")
    if not url.host:
        raise _blocked("URL has no host")
    return url


async def _resolve(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


async def _checked_addresses(url: httpx.URL, policy: FetchPolicy) -> list[IPAddress]:
    """The addresses to connect to for ``url``; all of them must pass, or none is used."""
    host = url.raw_host.decode("ascii")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise _blocked(f"invalid host name {host!r}") from None
        if _ends_in_number(host):
            raise _blocked(f"non-canonical numeric host {host!r}") from None
        try:
            addresses = await _resolve(host)
        except (OSError, ValueError) as exc:  # gaierror, or IDNA trouble in the resolver
            raise _failed(f"cannot resolve {host!r}: {exc}") from exc
    if not addresses:
        raise _failed(f"{host!r} has no addresses")
    for ip in addresses:
        if (problem := _address_problem(ip, policy.allow_private)) is not None:
            raise _blocked(f"{host!r}: {problem}")
    return addresses


async def _send_pinned(client: httpx.AsyncClient, url: httpx.URL, policy: FetchPolicy) -> httpx.Response:
    """GET ``url`` from one of its checked addresses; the caller closes the streamed response."""
    addresses = await _checked_addresses(url, policy)
    name = url.raw_host.decode("ascii")
    headers = {**_HEADERS, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": name} if url.scheme == "https" else {}
    last_error: httpx.ConnectError | None = None
    for ip in addresses:
        request = client.build_request(
            "GET", url.copy_with(host=str(ip)), headers=headers, extensions=extensions, timeout=policy.timeout_s
        )
        try:
            return await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError as exc:  # try the next address, as a resolver-following client would
            last_error = exc
    raise _failed(f"cannot connect to {name!r}: {last_error}")


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise _failed(f"HTTP {response.status_code}")
    declared = response.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > max_bytes:
        raise _failed(f"Content-Length {declared[:40]} is over the limit of {max_bytes} bytes")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _failed(f"compressed body ({encoding}) refused")
    body = bytearray()
    async for chunk in response.aiter_bytes():  # identity encoding: the bytes as sent
        body += chunk
        if len(body) > max_bytes:
            raise _failed(f"body exceeds limit of {max_bytes} bytes")
    return bytes(body)


async def _fetch(url: str, policy: FetchPolicy, client: httpx.AsyncClient) -> bytes:
    current = _parse(url)
    for _ in range(policy.max_redirects + 1):
        response = await _send_pinned(client, current, policy)
        try:
            if response.status_code not in _REDIRECTS:
                return await _read_body(response, policy.max_bytes)
            location = response.headers.get("location")
            if not location:
                raise _failed(f"HTTP {response.status_code} without Location")
            current = _parse(location, base=current)
        finally:
            await response.aclose()
    raise _failed(f"more than {policy.max_redirects} redirects")


async def fetch_image(url: str, policy: FetchPolicy, client: httpx.AsyncClient | None = None) -> bytes:
    """The bytes at an untrusted image URL, fetched under ``policy``.

    Raises IngestError: ``url_blocked`` (scheme, credentials, numeric tricks, or an address that is
    not allowed, at any redirect hop), ``url_fetch_failed`` (DNS, connect, deadline, HTTP status,
    too many redirects, too large, compressed or malformed response).
    """
    try:
        async with asyncio.timeout(policy.timeout_s):
            if client is not None:
                return await _fetch(url, policy, client)
            async with new_fetch_client(policy) as own:
                return await _fetch(url, policy, own)
    except TimeoutError as exc:
        raise _failed(f"no complete response within {policy.timeout_s:g}s") from exc
    except httpx.HTTPError as exc:  # transport, protocol and httpx's own timeout errors
        raise _failed(f"{type(exc).__name__}: {exc}") from exc

"""fetch_image against a real loopback HTTP(S) server and scripted transports: SSRF, redirects,
DNS pinning, deadlines and size limits."""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from urllib.parse import parse_qs

import httpx
import pytest
from PIL import Image

from moderator.ingest import fetch
from moderator.ingest.errors import IngestError
from moderator.ingest.fetch import FetchPolicy, fetch_image, new_fetch_client
from moderator.ingest.images import ImageLimits, decode_image
from moderator.ingest.schema import DeadLetterReason

BLOCKED = DeadLetterReason.URL_BLOCKED
FAILED = DeadLetterReason.URL_FETCH_FAILED
LOCAL = FetchPolicy(timeout_s=2.0, max_bytes=100_000, allow_private=True)
PUBLIC_IP = "93.184.216.34"

# A test CA and a certificate for "img.test" signed by it (EC P-256, valid 2025-2125), so the
# HTTPS test needs no certificate tooling.
TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBazCCARGgAwIBAgIBATAKBggqhkjOPQQDAjAcMRowGAYDVQQDDBFtb2RlcmF0
b3IgdGVzdCBDQTAgFw0yNTAxMDEwMDAwMDBaGA8yMTI1MDEwMTAwMDAwMFowHDEa
MBgGA1UEAwwRbW9kZXJhdG9yIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAASUO//Rx9JGG1Ac987N71fbgFIgBLWqUMD+uSbzmUAOnTLDHTxHumlVQmxs
SH3voyz7logGAENxwkPEIiv9C/rlo0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1Ud
DwEB/wQEAwIBhjAdBgNVHQ4EFgQUREtEmoG3Nd3WawJMKextYVQGemQwCgYIKoZI
zj0EAwIDSAAwRQIhALpCr5hH3U0M788rrDv61A5OpQveAYVTFnLgwFWTsWJnAiBo
5fBCcisZdBu/shKlUojtgAqlMcnJXBArHalaYg2SWw==
-----END CERTIFICATE-----
"""
IMG_TEST_CERT_AND_KEY = """-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIBAjAKBggqhkjOPQQDAjAcMRowGAYDVQQDDBFtb2RlcmF0
b3IgdGVzdCBDQTAgFw0yNTAxMDEwMDAwMDBaGA8yMTI1MDEwMTAwMDAwMFowEzER
MA8GA1UEAwwIaW1nLnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASP58ld
WNBucJGjI0dEVALKTDaiiRu499rnpd2mMrYFLwQ5t0XpPPtqZRBPZUhhojrjqo/V
kmqpRWHPmzlgtNWao1swWTATBgNVHREEDDAKgghpbWcudGVzdDAMBgNVHRMBAf8E
AjAAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMB8GA1UdIwQYMBaAFERLRJqBtzXd1msC
TCnsbWFUBnpkMAoGCCqGSM49BAMCA0gAMEUCIFO8Vblhhs/4d2gX1neCdrqjvFgM
POdrnSZsE7s4vJ8MAiEAxCrwmniwim6jkXr71BgWpMo38BB5js01fpbS4Cyfnps=
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/AjPxbNF0tvjrdjb
nR737wrP/NI+q+vRa80HPB+I/FyhRANCAASP58ldWNBucJGjI0dEVALKTDaiiRu4
99rnpd2mMrYFLwQ5t0XpPPtqZRBPZUhhojrjqo/VkmqpRWHPmzlgtNWa
-----END PRIVATE KEY-----
"""


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buf, "PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(BaseHTTPRequestHandler):
    """Routes for every hostile server behaviour the fetcher must survive."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", ""), self.headers.get("Cookie")))
        route, _, query = self.path.partition("?")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            self._route(route, parse_qs(query))

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, route: str, query: dict[str, list[str]]) -> None:
        if route == "/img.png":
            self._send(200, PNG, Content_Length=str(len(PNG)), Content_Type="image/png")
        elif route == "/redirect":
            self._send(302, Location=query["to"][0], Content_Length="0")
        elif route.startswith("/chain/"):
            hops = int(route.rsplit("/", 1)[1])
            self._send(302, Location=f"/chain/{hops - 1}" if hops > 1 else "/img.png", Content_Length="0")
        elif route == "/set-cookie":
            self._send(302, Location="/img.png", Set_Cookie="session=stolen; Path=/", Content_Length="0")
        elif route == "/no-location":
            self._send(302, Content_Length="0")
        elif route == "/slow":
            self._send(200, Content_Length="1000")
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.02)
        elif route == "/huge-declared":
            self._send(200, b"x" * 100, Content_Length=str(10**9))
        elif route == "/stream":  # no length: body ends when the connection closes
            self._send(200)
            for _ in range(64):
                self.wfile.write(b"x" * 32_768)
        elif route == "/gzip":
            body = gzip.compress(PNG)
            self._send(200, body, Content_Length=str(len(body)), Content_Encoding="gzip")
        elif route == "/absurd-length":
            self._send(200, b"x", Content_Length="9" * 5000)
        else:
            self._send(404, b"nope", Content_Length="4")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, str | None]]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # refused TLS handshakes and hang-ups are the point of several tests


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    """A plain HTTP server on 127.0.0.1 with hostile routes."""
    yield from _serve(None)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    """The same routes over TLS, with a certificate for the name img.test only."""
    chain = tmp_path_factory.mktemp("tls") / "img.test.pem"
    chain.write_text(IMG_TEST_CERT_AND_KEY)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    yield from _serve(context)


def _serve(context: ssl.SSLContext | None) -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.seen = []
    if context is not None:
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def seen(server: _Server) -> list[tuple[str, str, str | None]]:
    """Requests the server receives during one test."""
    server.seen.clear()
    return server.seen


def _url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


async def _reason(url: str, policy: FetchPolicy = LOCAL, client: httpx.AsyncClient | None = None) -> str:
    with pytest.raises(IngestError) as caught:
        await fetch_image(url, policy, client)
    return caught.value.reason


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Replace resolution; returns the names looked up, in order."""
    asked: list[str] = []

    async def resolve(host: str) -> list[fetch.IPAddress]:
        asked.append(host)
        return [ip_address(a) for a in answers[host]]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    return asked


def _scripted(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """A client whose 'network' is ``handler``, recording every request that reached it."""
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(record)), requests


def _redirect_to(location: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": location}) if request.url.path == "/r" else httpx.Response(200)

    return handler


# --- the real server -------------------------------------------------------------------------------


async def test_fetches_an_image_from_an_allowed_host(server: _Server, seen: list) -> None:
    data = await fetch_image(_url(server, "/img.png"), LOCAL)
    assert data == PNG
    assert decode_image(data, ImageLimits(100_000, 10_000, 100)).size == (8, 8)


async def test_default_policy_blocks_loopback_without_connecting(server: _Server, seen: list) -> None:
    assert await _reason(_url(server, "/img.png"), FetchPolicy()) == BLOCKED
    assert seen == []


async def test_default_policy_blocks_names_resolving_to_loopback(server: _Server, seen: list) -> None:
    port = server.server_address[1]
    assert await _reason(f"http://localhost:{port}/img.png", FetchPolicy()) == BLOCKED
    assert seen == []


async def test_redirect_to_cloud_metadata_is_blocked_even_when_private_is_allowed(server: _Server, seen: list) -> None:
    url = _url(server, "/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert await _reason(url) == BLOCKED
    assert len(seen) == 1


@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "http://2130706433/"])
async def test_redirect_to_a_forbidden_url_is_blocked(server: _Server, seen: list, target: str) -> None:
    assert await _reason(_url(server, f"/redirect?to={target}")) == BLOCKED


async def test_redirects_are_followed_up_to_the_limit(server: _Server, seen: list) -> None:
    assert await fetch_image(_url(server, "/chain/3"), LOCAL) == PNG
    assert [path for path, _, _ in seen] == ["/chain/3", "/chain/2", "/chain/1", "/img.png"]


async def test_one_redirect_too_many_fails(server: _Server, seen: list) -> None:
    assert await _reason(_url(server, "/chain/4")) == FAILED
    assert len(seen) == 4


async def test_redirect_without_location_fails(server: _Server, seen: list) -> None:
    assert await _reason(_url(server, "/no-location")) == FAILED


async def test_slow_drip_hits_the_total_deadline(server: _Server, seen: list) -> None:
    policy = FetchPolicy(timeout_s=0.5, max_bytes=100_000, allow_private=True)
    started = time.monotonic()
    assert await _reason(_url(server, "/slow"), policy) == FAILED  # each byte arrives well within 0.5 s
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/huge-declared", "Content-Length 1000000000 is over the limit"),
        ("/stream", "body exceeds limit of 100000 bytes"),
        ("/gzip", "compressed body (gzip) refused"),
        ("/missing", "HTTP 404"),
        ("/absurd-length", "bad Content-Length"),
    ],
)
async def test_oversized_compressed_or_failed_responses_fail(server: _Server, seen: list, path: str, why: str) -> None:
    with pytest.raises(IngestError, match=re.escape(why)) as caught:
        await fetch_image(_url(server, path), LOCAL)
    assert caught.value.reason == FAILED


async def test_connection_refused_fails() -> None:
    closed = _Server(("127.0.0.1", 0), _Handler)
    port = closed.server_address[1]
    closed.server_close()
    assert await _reason(f"http://127.0.0.1:{port}/img.png") == FAILED


async def test_cookies_are_never_stored_or_sent(server: _Server, seen: list) -> None:
    assert await fetch_image(_url(server, "/set-cookie"), LOCAL) == PNG
    assert [cookie for _, _, cookie in seen] == [None, None]


async def test_connects_to_the_checked_address_not_a_second_lookup(
    server: _Server, seen: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ".invalid" never resolves for real: the fetch only works if httpx uses the pinned IP.
    asked = _fake_dns(monkeypatch, {"rebind.invalid": ["127.0.0.1"]})
    port = server.server_address[1]
    assert await fetch_image(f"http://rebind.invalid:{port}/img.png", LOCAL) == PNG
    assert asked == ["rebind.invalid"]
    assert seen[0][1] == f"rebind.invalid:{port}"


async def test_https_is_pinned_and_still_verifies_the_name(
    tls_server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dns(monkeypatch, {"img.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    port = tls_server.server_address[1]
    verify = ssl.create_default_context(cadata=TEST_CA)
    async with httpx.AsyncClient(verify=verify, trust_env=False) as client:
        assert await fetch_image(f"https://img.test:{port}/img.png", LOCAL, client) == PNG
        # Same IP, a name the certificate does not cover: the TLS check is on the name, not the IP.
        assert await _reason(f"https://other.test:{port}/img.png", LOCAL, client) == FAILED


# --- addresses and URLs, no network --------------------------------------------------------------

FORBIDDEN_HOSTS = [
    "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "255.255.255.255", "[::1]", "[::]", "[fe80::1]", "[fc00::1]", "[fec0::1]", "[ff02::1]",
    "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]", "[2002:7f00:1::]",
    "2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "127.1", "017700000001",
]  # fmt: skip


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request may be sent, got {request.url}")


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
async def test_default_policy_blocks_non_public_and_numeric_trick_hosts(host: str) -> None:
    client, _ = _scripted(_unreachable)
    assert await _reason(f"http://{host}/x.png", FetchPolicy(), client) == BLOCKED


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "0.0.0.0", "[::]", "224.0.0.1", "[fe80::1]", "[::ffff:169.254.169.254]", "127.1"]
)
async def test_allow_private_never_allows_metadata_unspecified_multicast_or_tricks(host: str) -> None:
    client, _ = _scripted(_unreachable)
    assert await _reason(f"http://{host}/x.png", LOCAL, client) == BLOCKED


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http://user:pass@example.com/x.png",
        "http://127.0.0.1\\@example.com/x.png",
        "http:///x.png",
        "",
        "http://exa mple.com/x.png",
        "http://example.com/" + "a" * 5000,
    ],
)
async def test_malformed_or_credentialed_urls_are_blocked(url: str) -> None:
    client, _ = _scripted(_unreachable)
    assert await _reason(url, FetchPolicy(), client) == BLOCKED


async def test_public_address_is_fetched_with_the_name_kept_in_host_and_sni(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"cdn.example": [PUBLIC_IP]})
    client, requests = _scripted(lambda request: httpx.Response(200, content=PNG))
    assert await fetch_image("https://cdn.example/a/b.png?x=1", FetchPolicy(), client) == PNG
    (request,) = requests
    assert str(request.url) == f"https://{PUBLIC_IP}/a/b.png?x=1"
    assert request.headers["host"] == "cdn.example"
    assert request.extensions["sni_hostname"] == "cdn.example"
    assert request.headers["accept-encoding"] == "identity"


async def test_a_name_with_any_private_answer_is_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"mixed.example": [PUBLIC_IP, "10.0.0.7"]})
    client, _ = _scripted(_unreachable)
    assert await _reason("http://mixed.example/x.png", FetchPolicy(), client) == BLOCKED


async def test_unresolvable_name_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_answer(host: str) -> list[fetch.IPAddress]:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(fetch, "_resolve", no_answer)
    client, _ = _scripted(_unreachable)
    assert await _reason("http://nowhere.example/x.png", FetchPolicy(), client) == FAILED


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1/x.png", "http://localhost/x.png", "http://[::ffff:10.0.0.1]/x.png", "//0x7f.1/x.png"]
)
async def test_redirect_from_a_public_host_to_a_private_one_is_blocked(location: str) -> None:
    client, requests = _scripted(_redirect_to(location))
    assert await _reason(f"http://{PUBLIC_IP}/r", FetchPolicy(), client) == BLOCKED
    assert len(requests) == 1


async def test_a_client_that_follows_redirects_itself_is_overridden() -> None:
    client, requests = _scripted(_redirect_to("http://127.0.0.1/x.png"))
    client.follow_redirects = True
    assert await _reason(f"http://{PUBLIC_IP}/r", FetchPolicy(), client) == BLOCKED
    assert len(requests) == 1


async def test_relative_redirect_is_resolved_against_the_current_url() -> None:
    client, requests = _scripted(
        lambda request: (
            httpx.Response(302, headers={"Location": "../img.png"})
            if request.url.path == "/a/r"
            else httpx.Response(200, content=PNG)
        )
    )
    assert await fetch_image(f"http://{PUBLIC_IP}/a/r", FetchPolicy(), client) == PNG
    assert requests[1].url.path == "/img.png"


async def test_new_fetch_client_ignores_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    async with new_fetch_client(FetchPolicy()) as client:
        assert client.trust_env is False
        assert client.follow_redirects is False

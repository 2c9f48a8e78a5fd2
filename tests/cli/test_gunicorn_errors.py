"""Requests gunicorn refuses before the application sees them still get FHIR
OperationOutcomes (R4 http.html#summary: errors come back as OperationOutcome), and a
streamed body past the size limit is a 413.

Runs the real ``fhirserver serve`` (gunicorn, embedded database) and speaks raw HTTP
over a socket, as only a raw socket can send what a client library refuses to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirserver.storage.ferretdb import free_port
from tests.cli.test_serve import operator_token, stop, wait_up

LIMIT = 100_000  # FHIR_MAX_BODY_BYTES for this server
TOKENS: dict[int, str] = {}  # port -> an operator's Authorization header


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    if os.environ.get("MONGODB_URI"):
        pytest.skip("runs the embedded database")
    data_dir = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update({"FHIR_DATA_DIR": str(data_dir), "FHIR_PORT": str(port), "FHIR_WORKERS": "1",
                "FHIR_MAX_BODY_BYTES": str(LIMIT)})
    exe = Path(sys.executable).parent / "fhirserver"
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{port}", proc)
        TOKENS[port] = operator_token(data_dir, port)["Authorization"]
        yield "127.0.0.1", port
    finally:
        stop(proc)


def exchange(server: tuple[str, int], raw: bytes, body_chunks: list[bytes] = ()) -> tuple[int, dict[str, str], bytes]:  # type: ignore[assignment]
    """Send ``raw`` (and chunks, chunked-encoded), read the whole answer."""
    with socket.create_connection(server, timeout=30) as sock:
        sock.sendall(raw)
        try:
            for chunk in body_chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if body_chunks:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body ended
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
            head, sep, rest = data.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if sep and length and len(rest) >= length[0]:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def outcome(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/fhir+json")
    parsed = json.loads(body)
    assert parsed["resourceType"] == "OperationOutcome"
    assert parsed["issue"][0]["diagnostics"]
    return parsed


@pytest.mark.parametrize("name,raw,status", [
    ("request line too long", b"GET /Patient?name=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     414),
    ("header too large", b"GET /metadata HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
     431),
    ("too many headers", b"GET /metadata HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n", 431),
    ("non-ASCII request line", "GET /Patient/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    ("bad Expect",
     b"POST /Patient HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
     417),
    ("bad Transfer-Encoding",
     b"POST /Patient HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: rot13\r\n\r\n", 501),
])
def test_requests_gunicorn_refuses_get_operation_outcomes_http_summary(server, name, raw, status):
    outcome(*exchange(server, raw), status)


def test_long_search_urls_reach_the_application_search_get(server):
    """A request line up to 8190 bytes (gunicorn's ceiling) is read: a long search
    reaches the server (401 here: no token), not gunicorn's 414."""
    raw = b"GET /Patient?_id=" + b",".join(b"id%05d" % i for i in range(900)) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert 6000 < len(raw) < 8190
    status, headers, body = exchange(server, raw)
    outcome(status, headers, body, 401)


@pytest.mark.parametrize("size,status", [(2 * LIMIT, 413), (LIMIT // 2, 201)])
def test_chunked_body_over_the_limit_is_413_http_summary(server, size, status):
    """A streamed body is held to FHIR_MAX_BODY_BYTES like one with a Content-Length,
    and answered 413, not cut and called invalid JSON."""
    head = (b"POST /Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: "
            + TOKENS[server[1]].encode() + b"\r\n\r\n")
    body = json.dumps({"resourceType": "Patient", "name": [{"family": "a" * size}]}).encode()
    chunks = [body[i:i + 8192] for i in range(0, len(body), 8192)]
    got, headers, answer = exchange(server, head, chunks)
    assert got == status, answer[:300]
    if status == 413:
        outcome(got, headers, answer, 413)


@pytest.mark.parametrize("size", [10, 100_000])
def test_a_connection_said_to_stay_open_stays_open_after_an_unread_body_http_keepalive(server, size):
    """RFC 9112 section 9.6: a server that will close the connection says so. A body
    refused before it is read (401: no token) is drained when small; past what the
    server drains, the answer says ``Connection: close``, so a client never sends its
    next request into a connection that is going away."""
    body = b"[" * size
    with socket.create_connection(server, timeout=30) as sock:
        sock.sendall(b"PUT /Patient/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/fhir+json"
                     b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        first = b""
        while b"\r\n\r\n" not in first or not first.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            first += part
        head = first.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        assert head.startswith("http/1.1 401")
        if "connection: close" in head:
            assert size > 64 * 1024
            return
        sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: t\r\n\r\n")
        second = sock.recv(65536)
        assert second.startswith(b"HTTP/1.1 200"), (size, second[:100])


@pytest.mark.parametrize("name,body", [
    ("chunk size not hexadecimal", b"0x37\r\n" + b"{" * 55 + b"\r\n0\r\n\r\n"),
    ("chunk data without its CRLF", b"2\r\n{}XX0\r\n\r\n"),
    ("control byte in a chunk extension", b"2;a=\x01\r\n{}\r\n0\r\n\r\n"),
    ("trailer line without a colon", b"2\r\n{}\r\n0\r\nnot a trailer\r\n\r\n"),
])
def test_a_malformed_chunked_body_is_400_not_500_http_summary(server, name, body):
    """RFC 9112 section 7.1: a chunked body the server cannot read is the client's
    error, found only once the application reads it: 400 with an OperationOutcome (R4
    http.html#summary), never a 500, and the connection closes."""
    head = (b"POST /Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
            b"Transfer-Encoding: chunked\r\nAuthorization: "
            + TOKENS[server[1]].encode() + b"\r\n\r\n")
    status, headers, answer = exchange(server, head + body)
    outcome(status, headers, answer, 400)
    assert headers.get("connection", "").lower() == "close"

"""gunicorn's own error answers as OperationOutcomes (R4 http.html#summary).

Some requests never reach the application: gunicorn refuses a request line over
``limit_request_line`` (414), too many or too large header fields (431), a request
line that is not ASCII HTTP (400), an ``Expect`` it cannot meet (417) or a
``Transfer-Encoding`` it does not support (501). It writes those answers itself, as
HTML, through ``gunicorn.util.write_error``: this worker writes them as FHIR JSON
instead, with the same status, so a FHIR client gets an OperationOutcome for every
failure.
"""

from __future__ import annotations

import functools
import select
import selectors
import socket
import threading
import time
from typing import Any

import orjson
from gunicorn import util
from gunicorn.http.errors import InvalidHeader, UnsupportedTransferCoding
from gunicorn.workers import gthread
from gunicorn.workers.gthread import TConn, ThreadWorker

from ..errors import Issue, operation_outcome

#: HTTP status -> issue type (http://hl7.org/fhir/issue-type).
_CODES = {400: "structure", 403: "forbidden", 414: "too-long", 417: "not-supported",
          431: "too-long", 501: "not-supported"}


def outcome_bytes(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP/1.1 answer: status line, headers and an OperationOutcome body."""
    text = f"{reason}: {message}" if message else reason
    severity = "fatal" if status >= 500 else "error"
    body = orjson.dumps(operation_outcome([Issue(
        text[:1000], code=_CODES.get(status, "exception" if status >= 500 else "invalid"),
        severity=severity)]))
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_outcome(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error``."""
    util.write_nonblock(sock, outcome_bytes(status_int, reason, mesg))


#: What gunicorn reads and throws away of a body the application left unread, before
#: it serves the connection's next request (``gunicorn.http.parser._DRAIN_MAX_BYTES``).
#: Past it, gunicorn closes the connection, although its answer said keep-alive.
DRAIN_LIMIT = 64 * 1024


def _leaves_body_unread(environ: dict[str, Any], status: str) -> bool:
    """Whether the answer leaves more of the request body than gunicorn drains:
    a Content-Length body with more than :data:`DRAIN_LIMIT` bytes not read, or a
    chunked body (its length unknown) under an error status (the application
    refused it before reading it)."""
    reader = getattr(environ.get("wsgi.input"), "reader", None)
    left = getattr(reader, "length", None)
    if isinstance(left, int):
        return left > DRAIN_LIMIT
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked and status[:1] in ("4", "5")


def closing_unread(app: Any) -> Any:
    """``app``, its answers saying ``Connection: close`` when the connection will
    close: a client (a browser, urllib3) that reuses a connection it was told to
    keep alive fails its next request when gunicorn closes it (an EHR sending a large
    Bundle with an expired token gets its 401, then a broken connection)."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if _leaves_body_unread(environ, status):
                start_response.__self__.force_close()  # gunicorn's Response
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


#: How long a thread that has just answered on a kept-alive connection waits there for
#: the client's next request (milliseconds) before it hands the connection back to the
#: worker's poller. A client sending its requests one after another (an EHR, an app
#: paging) sends the next within about a millisecond of the answer.
LINGER_MS = 5
#: How long a graceful close waits for the client to close its end, and how much it
#: reads meanwhile (``gunicorn.util.close_graceful``'s defaults).
CLOSE_SECONDS = 2.0
CLOSE_DRAIN = 64 * 1024


class FhirThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering the requests gunicorn refuses with
    OperationOutcomes, and saying ``Connection: close`` when a body left unread will
    close the connection. ``Worker.handle_error`` writes through the module function
    ``gunicorn.util.write_error`` (its only caller), replaced here in the worker process
    before it serves anything.

    A kept-alive connection's next request is served by the thread that answered the
    last one when it comes within :data:`LINGER_MS` and no other connection waits for a
    thread. gthread would hand the connection to its main thread's poller and back to a
    pool thread, a trip through two queues and three thread switches per request that
    cost more of the process's one interpreter lock than parsing the request did.

    A connection that ends is closed gracefully on the main thread's poller, not by
    waiting there for the client (:meth:`close_gracefully`)."""

    def init_process(self) -> Any:
        util.write_error = write_outcome
        self._waiting = 0  # connections handed to the pool, not yet taken by a thread
        self._waiting_lock = threading.Lock()
        # connections closing gracefully -> when their wait ends (in that order)
        self._closing: dict[Any, float] = {}
        FhirConnection.worker = self
        gthread.TConn = FhirConnection  # what ``accept`` makes its connections with
        return super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """As gunicorn's, but a transfer coding the fast HTTP parser (``gunicorn_h1c``,
        which reports it as a bad header) does not know is answered 501, as the Python
        parser answers it (RFC 9112 section 6.1)."""
        if isinstance(exc, InvalidHeader) and exc.hdr == "Unsupported Transfer-Encoding":
            exc = UnsupportedTransferCoding(str(exc))
        super().handle_error(req, client, addr, exc)

    def enqueue_req(self, conn: Any) -> None:
        with self._waiting_lock:
            self._waiting += 1
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        with self._waiting_lock:
            self._waiting -= 1
        keep = super().handle(conn)
        while keep is True and self.alive and self._next_request_comes(conn):
            keep = super().handle(conn)
        return keep

    def _next_request_comes(self, conn: Any) -> bool:
        """Whether the connection's next request is here or comes within the linger,
        while no other connection waits for a thread."""
        if self._waiting:
            return False  # gthread queues it behind them, read-ahead bytes or not
        if conn.parser.unreader.buf.getvalue():
            return True  # read ahead with the last request (pipelined)
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        # a connection that came to wait meanwhile goes first
        return bool(poller.poll(LINGER_MS)) and not self._waiting

    def murder_keepalived(self, force: bool = False) -> None:
        """gthread's expiry of idle kept-alive connections, and of the graceful closes
        past their time (all of them when the worker stops)."""
        super().murder_keepalived(force)
        now = time.monotonic()
        while self._closing:
            conn = next(iter(self._closing))
            if not force and self._closing[conn] > now:
                break
            self._closed(conn)

    def close_gracefully(self, conn: Any) -> None:
        """RFC 9112 section 9.6 as ``gunicorn.util.close_graceful`` does it (half-close,
        read until the client closes, at most 64 KiB or 2 s, then close) without its
        waiting: the FIN leaves at once and the main thread's poller reads what comes.
        gthread waited on its main thread, accepting and dispatching nothing, so a
        few clients that keep their end open stalled every other connection."""
        sock = conn.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, functools.partial(self._drain, conn))
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        conn.drained = 0
        self._closing[conn] = time.monotonic() + CLOSE_SECONDS
        self.nr_conns += 1  # bounded by worker_connections like any other

    def _drain(self, conn: Any, sock: Any) -> None:
        try:
            while conn.drained < CLOSE_DRAIN:
                data = sock.recv(CLOSE_DRAIN)
                if not data:
                    break
                conn.drained += len(data)
        except BlockingIOError:
            return  # more may come before the client closes
        except OSError:
            pass
        self._closed(conn)

    def _closed(self, conn: Any) -> None:
        del self._closing[conn]
        self.nr_conns -= 1
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        util.close(conn.sock)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = self.wsgi
        if "fhirserver" in getattr(app, "extensions", {}):
            from .export import start_runner

            # Resume at once the exports a worker that died left (their lease runs out).
            start_runner(app)
        self.wsgi = closing_unread(app)


class FhirConnection(TConn):  # type: ignore[misc]
    """gthread's connection, whose graceful close the worker of its process does on its
    poller (:meth:`FhirThreadWorker.close_gracefully`); closes on other threads (none
    in gunicorn 27) keep gthread's."""

    worker: FhirThreadWorker | None = None

    def close(self, graceful: bool = False) -> None:
        worker = FhirConnection.worker
        if graceful and worker is not None and threading.current_thread() is threading.main_thread():
            worker.close_gracefully(self)
        else:
            super().close(graceful)

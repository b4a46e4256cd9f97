"""The HTTP server under `nemgan serve`: uvicorn with a request-head guard.

uvicorn's fast parser (httptools, i.e. llhttp) has no limit on the size of a request's head, and its Python
binding grows a header value by concatenating every fragment the socket delivers, which is quadratic: one
100 MB header took 31.8 s of the event loop (every other connection waited) and ten 20 MB headers grew the
process by 233 MB. `GuardedHttpToolsProtocol` counts the bytes of each request head (request line + header
fields) before they reach the parser and refuses a head over `MAX_HEAD_BYTES`, or with more than
`MAX_HEADERS` fields, with `431 Request Header Fields Too Large` (JSON body) and closes the connection: the
parser never sees more than the limit, so the cost is linear and a refused connection holds at most one
socket read (<= 256 KiB) of memory. Bodies are not counted (they have their own caps, service/middleware.py);
the size lines and the trailer section of a chunked body are, each against the same cap (httptools grows
trailer values the same way).

Without httptools (uvicorn's pure-Python h11 stack) the same limit is h11's `max_incomplete_event_size`
(h11 answers an oversized head with 400 and closes).

    uvicorn --http service.server:GuardedHttpToolsProtocol --factory service.app:create_app   # the same by hand
"""

from __future__ import annotations

import logging

import orjson

log = logging.getLogger("nemgan.service")

MAX_HEAD_BYTES = 64 * 1024  # request line + all header fields; nginx's default is 4 x 8 KiB buffers
LINGER_S = 2.0  # how long a refused connection's remaining bytes are read and dropped before it is closed
MAX_HEADERS = 100  # header fields a request (h11 and most servers: bounded by size only; Go and Jetty: ~100)

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without the [standard] extra: the h11 fallback below
    httptools = None
    HttpToolsProtocol = object


class HeadTooLarge(Exception):
    pass


def _refusal(message: str) -> bytes:
    body = orjson.dumps({"error": "request header fields too large", "detail": message})
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


_on_body = HttpToolsProtocol.on_body if httptools is not None else None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head: 431 + close above it."""

    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_head = True  # between messages, the next bytes start a head
        self._head_seen = 0
        self._section = "the request head"
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after a 431: drop what the client still sends
            return
        if self._in_head:
            seen = self._head_seen + len(data)
            if seen > self.max_head_bytes:
                return self._feed_in_pieces(data)
            self._head_seen = seen
        self._feed(data)

    def _feed_in_pieces(self, data: bytes) -> None:
        """Feed no more head than the cap allows: if the head ends inside a piece, the rest is body (or the next
        request, counted afresh); if it does not, 431 before the parser sees a byte more."""
        while data and not self._refused and self.parser is not None:
            if self._in_head:
                room = self.max_head_bytes - self._head_seen
                if room <= 0:
                    return self._refuse(f"{self._section} exceeds {self.max_head_bytes} bytes")
                piece, data = data[:room], data[room:]
                self._head_seen += len(piece)
            else:
                piece, data = data, b""
            if not self._feed(piece):
                return

    def _feed(self, data: bytes) -> bool:
        """uvicorn's data_received, with the guard's refusals told apart; False when the connection is done."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, HeadTooLarge):
                self._refuse(str(e.__context__))
            else:
                self._bad_request()
            return False
        except httptools.HttpParserError:
            self._bad_request()
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    # parser callbacks: where a head ends (the field count is checked once, there) and where the next starts
    def on_headers_complete(self) -> None:
        self._in_head = False
        if len(self.headers) > self.max_headers:
            raise HeadTooLarge(f"more than {self.max_headers} header fields")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_seen, self._section = True, 0, "the request head"
        super().on_message_complete()

    # a chunked body: each chunk's size line, and after the last one (size 0) the trailer section, are counted
    # like a head (httptools grows trailer values by the same concatenation); the chunk's data is not
    def on_chunk_header(self) -> None:
        self._in_head, self._head_seen, self._section = True, 0, "a chunk header or the trailer section"

    def on_body(self, body: bytes) -> None:
        self._in_head = False
        _on_body(self, body)

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _refuse(self, message: str) -> None:
        from . import metrics as M

        self._refused = True
        M.REJECTED.labels("header_too_large").inc()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("refused a request from %s: %s (431)", client, message)
        t = self.transport
        if t.is_closing():
            return
        t.write(_refusal(message))
        # a lingering close, as nginx does: half-close, then read and drop what the client is still sending
        # (data_received returns at once) for up to LINGER_S, so that the 431 reaches a client that reads
        # only after sending everything, instead of being lost to the reset a close with unread data causes
        try:
            t.write_eof()
        except (NotImplementedError, RuntimeError, OSError):
            t.close()
            return
        self.loop.call_later(LINGER_S, t.close)


def uvicorn_options() -> dict:
    """The keyword arguments `uvicorn.run`/`uvicorn.Config` need for the guarded server."""
    if httptools is not None:
        return {"http": GuardedHttpToolsProtocol}
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD_BYTES}


def describe() -> str:
    kind = "httptools + head guard" if httptools is not None else "h11"
    return f"{kind}: request heads over {MAX_HEAD_BYTES // 1024} KiB or {MAX_HEADERS} header fields refused (431)"


def startup_notes(settings) -> list[tuple[int, str]]:
    """(log level, line): what `nemgan serve` says at start about who may do what."""
    notes = [(logging.INFO, f"HTTP front: {describe()}")]
    if settings.api_key:
        on = "auth is on: learn, activate, rollback and cancel need 'Authorization: Bearer <NEMGAN_API_KEY>'"
        notes.append((logging.INFO, on))
        return notes
    extra = f" and {', '.join(settings.allowed_origins)}" if settings.allowed_origins else ""
    off = (f"auth is OFF (NEMGAN_API_KEY unset): anyone who can reach {settings.host}:{settings.port} may learn "
           "priors, activate or roll back versions and cancel jobs. Browsers are held to this service's own "
           f"pages{extra}: a POST/PUT/PATCH/DELETE whose Origin or Referer names another site gets 403. Set "
           "NEMGAN_API_KEY before listening beyond localhost.")
    notes.append((logging.WARNING, off))
    return notes

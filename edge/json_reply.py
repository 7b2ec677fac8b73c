"""The JSON requests and answers of the Pi's local HTTP servers (the status page's lock
action, the coordinator interface)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def reply_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answers `body` as JSON, never cached. A refusal ends the connection: what was
    left of a refused request's body is not read."""
    data = json.dumps(body, default=str).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Cache-Control", "no-store")
    if status >= 400:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    handler.wfile.write(data)


class RequestRefusedError(Exception):
    """A request answered `status` with this reason (`{"error": reason}`)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def declared_length(handler: BaseHTTPRequestHandler) -> int | None:
    """The request's Content-Length, None when absent or not a decimal number. ASCII
    digits only: `str.isdigit` takes "²" too, which `int` then refuses (the connection
    dropped without an answer)."""
    length = handler.headers.get("Content-Length")
    if length is None or not (length.isascii() and length.isdigit()):
        return None
    return int(length)


def read_body(handler: BaseHTTPRequestHandler, max_bytes: int) -> bytes:
    """The request's body, of its declared length; RequestRefusedError (411, 413, 400) when
    it declares none, more than `max_bytes`, or does not arrive in the handler's time."""
    length = declared_length(handler)
    if length is None:
        raise RequestRefusedError(411, "a Content-Length is required")
    if length > max_bytes:
        raise RequestRefusedError(413, f"the body is over {max_bytes} bytes")
    try:
        return handler.rfile.read(length)
    except TimeoutError as exc:
        raise RequestRefusedError(400, "the body did not arrive in time") from exc

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


def declared_length(handler: BaseHTTPRequestHandler) -> int | None:
    """The request's Content-Length, None when absent or not a decimal number. ASCII
    digits only: `str.isdigit` takes "²" too, which `int` then refuses (the connection
    dropped without an answer)."""
    length = handler.headers.get("Content-Length")
    if length is None or not (length.isascii() and length.isdigit()):
        return None
    return int(length)

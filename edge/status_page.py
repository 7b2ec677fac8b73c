"""The Pi's local status page and /metrics, for the site owner and installer on the LAN.

Standard library HTTP only (the Pi carries no web framework) and no assets from the
internet, so it works with the uplink down. `/` is `status_page.html`, one
self-contained page that refreshes itself from `/status.json` every second.

Its one action, `POST /safety-lock` (`{"locked": true, "reason": "..."}` or
`{"locked": false}`), sets or lifts the site's own safety lock (edge/safety_lock.py).
The page is on the LAN without a login, so the action is taken only from the Pi itself:
a loopback peer, a `Host` naming the loopback (so a web page the Pi's browser opens
cannot reach it under another name) and `Content-Type: application/json` (which a
cross-site form cannot send without the preflight this server never answers); no
other page may frame it. Anything else is refused with 403 / 400 / 411 / 413 / 415 and
`{"error": reason}`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from contract.site_control import LockReason
from edge.json_reply import RequestRefusedError, read_body, reply_json
from edge.loopback import LOOPBACK_PEERS, names_loopback
from edge.safety_lock import SafetyLock, SafetyLockError

MAX_ACTION_BYTES = 1024


class LockAction(BaseModel):
    """The page's lock action: a lock needs a reason, an unlock none."""

    model_config = ConfigDict(extra="forbid", strict=True)

    locked: bool
    reason: LockReason | None = None


def check_local(peer: str, headers: Message) -> None:
    """RequestRefusedError unless the request comes from the Pi itself, as the page's own JSON
    request does (see the module's docstring)."""
    if peer not in LOOPBACK_PEERS:
        raise RequestRefusedError(403, "the safety lock is set only on the Pi itself (127.0.0.1)")
    if not names_loopback(headers.get("Host", "")):
        raise RequestRefusedError(403, "open the page as http://127.0.0.1 to set the safety lock")
    if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        raise RequestRefusedError(415, "send the action as Content-Type: application/json")


# Package data, read once at import: an installation without it fails at start, not
# when someone opens the page.
PAGE = (resources.files("edge") / "status_page.html").read_bytes()


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.buffer_depth = Gauge(
            "wattfleet_edge_buffer_samples",
            "Samples buffered, not yet confirmed by the hub.",
            registry=registry,
        )
        self.oldest_unconfirmed_age = Gauge(
            "wattfleet_edge_oldest_unconfirmed_age_seconds",
            "Seconds since the oldest buffered sample was taken (0 when none is buffered).",
            registry=registry,
        )
        # Exposed with _total appended, as the other counters.
        self.resent_total = Counter(
            "wattfleet_edge_resent_samples",
            "Samples sent again because the hub had not confirmed them in time.",
            registry=registry,
        )
        self.bad_confirmations_total = Counter(
            "wattfleet_edge_malformed_confirmations",
            "Confirmations from the hub dropped because they broke the contract.",
            registry=registry,
        )
        # Exposed as wattfleet_edge_buffer_dropped_samples_total; starts from the
        # buffer's persisted count, so it only ever grows for the buffer's lifetime.
        self.buffer_dropped_total = Counter(
            "wattfleet_edge_buffer_dropped_samples",
            "Samples dropped by the buffer's age or size bound since it was created.",
            registry=registry,
        )
        self.http_sent_total = Counter(
            "wattfleet_edge_http_sent_samples",
            "Samples sent over the HTTPS fallback (edge/http_fallback.py).",
            registry=registry,
        )
        self.http_fallback_active = Gauge(
            "wattfleet_edge_http_fallback_active",
            "1 while the broker is away and telemetry goes over HTTPS.",
            registry=registry,
        )
        self.broker_connected = Gauge(
            "wattfleet_edge_broker_connected",
            "1 while connected to the broker.",
            registry=registry,
        )
        self.device_available = Gauge(
            "wattfleet_edge_device_available", "1 while the inverter answers.", registry=registry
        )
        self.last_seq = Gauge(
            "wattfleet_edge_last_seq", "Seq of the newest sample taken.", registry=registry
        )


class StatusServer:
    """Serves `/`, `/status.json` (whatever `snapshot()` returns) and `/metrics`, and
    takes the local safety lock action."""

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], dict[str, Any]],
        registry: CollectorRegistry,
        safety_lock: SafetyLock,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0

            def do_POST(self) -> None:
                if self.path != "/safety-lock":
                    self.send_error(404)
                    return
                try:
                    check_local(self.client_address[0], self.headers)
                    action = LockAction.model_validate_json(read_body(self, MAX_ACTION_BYTES))
                    if action.locked:
                        if action.reason is None:
                            raise RequestRefusedError(400, "a lock needs a reason")
                        safety_lock.lock_locally(action.reason)
                    else:
                        safety_lock.unlock_locally()
                except RequestRefusedError as exc:
                    reply_json(self, exc.status, {"error": str(exc)})
                except ValidationError as exc:
                    reply_json(self, 400, {"error": exc.errors()[0]["msg"]})
                except SafetyLockError as exc:
                    reply_json(self, 409, {"error": str(exc)})
                else:
                    reply_json(self, 200, safety_lock.status())

            def do_GET(self) -> None:
                if self.path in ("/", "/index.html"):
                    outer._reply(self, "text/html; charset=utf-8", PAGE)
                elif self.path == "/status.json":
                    body = json.dumps(snapshot(), default=str).encode()
                    outer._reply(self, "application/json", body)
                elif self.path == "/metrics":
                    outer._reply(self, CONTENT_TYPE_LATEST, generate_latest(registry))
                else:
                    self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per page refresh a second would flood the journal

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, content_type: str, body: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        # Never inside another page's frame, where a decoy could steer a click on the
        # page's Unlock button (clickjacking); both headers, for older browsers too.
        handler.send_header("X-Frame-Options", "DENY")
        handler.send_header("Content-Security-Policy", "frame-ancestors 'none'")
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

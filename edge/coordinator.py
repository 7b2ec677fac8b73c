"""The coordinator interface: how the site's optimizer on the Pi (the "Master
Coordinator") hands the agent its decisions, and learns what it needs to make them.

An HTTP server on 127.0.0.1:`coordinator_port` (standard library, its own threads; the
poll loop never waits for it), answering 403 to a request whose `Host` does not name
the loopback (edge/loopback.py):
- `POST /decision` with a JSON `Decision` (below): validated strictly, at most
  MAX_BODY_BYTES; answers 200 with the decision and when it expires, or 400 / 411 / 413
  / 415 with `{"error": reason}`, changing nothing; 409 for any decision but
  SELF_CONSUMPTION while the site's dynamic strategy is off (`strategy_enabled`) or
  the site is safety-locked (the lock binds the site's own optimizer too: whoever
  locked it wants the inverter left alone).
- `GET /decision`: the decision in force (null when none is).
- `GET /context`: the site's time zone, tariffs, prices now and for each hour of the
  local day, the latest reading, the decision in force, the site's strategy setting and
  its safety lock.
The decision in force travels in every sample's `optimizer` part until it expires
(`valid_for_s`); an expired one is not sent. Kept in memory: a coordinator posts again
after an agent restart within its own period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contract.fields import BATTERY_SETPOINT_W, DECISION, MODE, REASON, TARGET_SOC_PERCENT
from contract.site_control import SELF_CONSUMPTION_MODE
from contract.text import STORABLE
from edge.json_reply import RequestRefusedError, read_body, reply_json
from edge.loopback import names_loopback

log = logging.getLogger(__name__)

# A decision is a few hundred bytes; nothing larger is read.
MAX_BODY_BYTES = 4096
DEFAULT_VALID_FOR_S = 900
MAX_VALID_FOR_S = 24 * 3600
# A client that stalls mid-request holds one thread this long at most.
REQUEST_TIMEOUT_S = 5.0
HOST = "127.0.0.1"
FOREIGN_HOST = "ask as http://127.0.0.1 (the Host header)"
STRATEGY_OFF = (
    "the site's dynamic strategy is off (strategy_enabled: false): the inverter stays in"
    f" self-consumption, only {SELF_CONSUMPTION_MODE!r} is taken, not {{!r}}"
)
LOCKED = (
    "the site is safety-locked ({}): the inverter stays in self-consumption, only"
    f" {SELF_CONSUMPTION_MODE!r} is taken, not {{!r}}"
)


# The bounds are the telemetry fields' own (contract/fields.py), so whatever is accepted
# here can be sent; mypy sees their base types.
if TYPE_CHECKING:
    ModeText = str
    ReasonText = str
    SetpointW = float
    TargetSocPercent = float
else:
    ModeText = Annotated[MODE.wire_type, StringConstraints(min_length=1), STORABLE]
    ReasonText = Annotated[REASON.wire_type, STORABLE]
    SetpointW = BATTERY_SETPOINT_W.wire_type
    TargetSocPercent = TARGET_SOC_PERCENT.wire_type


class Decision(BaseModel):
    """What the coordinator decided."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    mode: ModeText
    reason: ReasonText
    battery_setpoint_w: SetpointW | None = None
    target_soc_percent: TargetSocPercent | None = None
    valid_for_s: int = Field(default=DEFAULT_VALID_FOR_S, ge=1, le=MAX_VALID_FOR_S)


class Coordination:
    """The latest decision and when it expires; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decision: Decision | None = None
        self._expires_at: datetime | None = None

    def decide(self, decision: Decision, now: datetime) -> datetime:
        """Takes the decision in place of any before it; returns when it expires."""
        expires_at = now + timedelta(seconds=decision.valid_for_s)
        with self._lock:
            self._decision, self._expires_at = decision, expires_at
        return expires_at

    def in_force(self, now: datetime) -> tuple[Decision, datetime] | None:
        """The decision and its expiry, None when there is none or it expired."""
        with self._lock:
            decision, expires_at = self._decision, self._expires_at
        if decision is None or expires_at is None or now >= expires_at:
            return None
        return decision, expires_at

    def optimizer_values(self, now: datetime) -> dict[str, Any]:
        """The sample's optimizer part, keyed by column; empty when no decision is in force."""
        current = self.in_force(now)
        if current is None:
            return {}
        decision = current[0]
        return {
            DECISION.column: decision.mode,  # the timeline shows it
            MODE.column: decision.mode,
            REASON.column: decision.reason,
            BATTERY_SETPOINT_W.column: decision.battery_setpoint_w,
            TARGET_SOC_PERCENT.column: decision.target_soc_percent,
        }


def decision_json(current: tuple[Decision, datetime] | None) -> dict[str, Any] | None:
    if current is None:
        return None
    decision, expires_at = current
    return {**decision.model_dump(exclude={"valid_for_s"}), "expires_at": expires_at.isoformat()}


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


class CoordinatorServer:
    """Serves the interface on 127.0.0.1 only: the coordinator runs on the same Pi, and
    nothing on the LAN may steer what the site reports."""

    def __init__(
        self,
        port: int,
        coordination: Coordination,
        context: Callable[[], dict[str, Any]],
        clock: Callable[[], datetime],
        strategy_enabled: bool,
        locked_by: Callable[[], str | None],
    ) -> None:
        """`strategy_enabled`: the site's dynamic strategy (a config key: it changes only
        with a restart); `locked_by`: who holds the site's safety lock and why, None
        while it is not locked (asked at every decision: it changes at any time)."""
        outer = self
        self.coordination = coordination
        self.clock = clock

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S

            def do_GET(self) -> None:
                if outer._foreign(self):
                    return
                if self.path == "/context":
                    reply_json(self, 200, context())
                elif self.path == "/decision":
                    reply_json(self, 200, decision_json(coordination.in_force(clock())))
                else:
                    reply_json(self, 404, {"error": f"no such route: GET {self.path[:100]}"})

            def do_POST(self) -> None:
                if outer._foreign(self):
                    return
                if self.path != "/decision":
                    reply_json(self, 404, {"error": f"no such route: POST {self.path[:100]}"})
                    return
                try:
                    decision = Decision.model_validate_json(outer._body(self))
                except RequestRefusedError as exc:
                    reply_json(self, exc.status, {"error": str(exc)})
                    return
                except ValidationError as exc:
                    reply_json(self, 400, {"error": _validation_reason(exc)})
                    return
                if decision.mode != SELF_CONSUMPTION_MODE:
                    holder = locked_by()
                    if holder is not None:
                        reply_json(self, 409, {"error": LOCKED.format(holder, decision.mode)})
                        return
                    if not strategy_enabled:
                        reply_json(self, 409, {"error": STRATEGY_OFF.format(decision.mode)})
                        return
                now = clock()
                before = coordination.in_force(now)
                expires_at = coordination.decide(decision, now)
                # A coordinator repeats its decision every period: only a change is news.
                changed = before is None or before[0].mode != decision.mode
                log.log(
                    logging.INFO if changed else logging.DEBUG,
                    "coordinator decided %s: %s",
                    decision.mode,
                    decision.reason,
                )
                reply_json(self, 200, decision_json((decision, expires_at)))

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a coordinator posting every minute would fill the journal

        self.server = ThreadingHTTPServer((HOST, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _foreign(handler: BaseHTTPRequestHandler) -> bool:
        """Refuses (403) a request whose Host does not name the loopback (edge/loopback.py:
        a web page on the Pi reaching it under another name); True if it did."""
        if names_loopback(handler.headers.get("Host", "")):
            return False
        reply_json(handler, 403, {"error": FOREIGN_HOST})
        return True

    @staticmethod
    def _body(handler: BaseHTTPRequestHandler) -> bytes:
        content_type = handler.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise RequestRefusedError(415, "send the decision as Content-Type: application/json")
        return read_body(handler, MAX_BODY_BYTES)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

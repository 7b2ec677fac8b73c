"""Signed commands from the hub: verify, refuse what must be refused, execute, and say
so on `nodes/{node_id}/acks`.

Every command is checked, in this order, before anything runs: readable within bounds
(at most MAX_COMMAND_BYTES of JSON, parsed without recursion: nesting a few hundred
deep, integers of thousands of digits, NaN, invalid UTF-8 and lone surrogates are
refused, never raised), a well-formed envelope and a whitelisted type, HMAC-SHA256
signature under this node's secret, not expired, not seen before (ids are remembered on
disk until they expire), typed parameters, and not a control command while the site is
safety-locked (edge/safety_lock.py; `contract.commands.COMMAND_KINDS`). A refusal is
acked `rejected` with the reason, under the command's id whenever one can be read; an
accepted command is acked `received`, then `succeeded` or `failed` with the device's
answer. No command runs a shell string.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from contract.commands import (
    MAX_ACK_DETAIL_CHARS,
    MAX_COMMAND_BYTES,
    MAX_COMMAND_ID_CHARS,
    MAX_LOG_CHUNK_BYTES,
    MAX_LOG_CHUNK_LINES,
    MAX_LOG_CHUNKS,
    MAX_LOG_LINE_CHARS,
    Ack,
    AckState,
    CloseTunnelParams,
    CommandEnvelope,
    CommandType,
    ConfigPushParams,
    FetchLogsParams,
    LogChunk,
    OpenTunnelParams,
    PowerParams,
    SelfUpdateParams,
    SetModeParams,
    refused_while_locked,
    validate_params,
    verify,
)
from contract.text import storable
from edge.config_push import ConfigPush, ConfigPushError
from edge.inverter import InverterError, SunSpecDevice
from edge.safety_lock import SafetyLock, SafetyLockError
from edge.self_update import SelfUpdate, SelfUpdateError
from edge.tunnel import Tunnel, TunnelError

log = logging.getLogger(__name__)

STORCTL_AUTO, STORCTL_CHARGE, STORCTL_DISCHARGE, STORCTL_HOLD = 0, 1, 2, 3
# Room in a log chunk's JSON for everything but its lines (id, numbers, keys).
_LOG_CHUNK_OVERHEAD_BYTES = 256
_COMMAND_TYPES = frozenset(CommandType)
_TUNNEL_COMMANDS = frozenset({CommandType.OPEN_TUNNEL, CommandType.CLOSE_TUNNEL})
# The hub writes the id first (contract.commands.build_command): so a command too large,
# too deep or not JSON at all is still refused under its id.
_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*"([^"\\\x00-\x1f]{1,%d})"' % MAX_COMMAND_ID_CHARS)


def _quotable(text: str, max_chars: int) -> str:
    """Text from a command (or about it) as an ack can carry it: cut to fit, NUL replaced."""
    return text.replace("\x00", "\ufffd")[:max_chars]


def _leading_id(payload: bytes) -> str:
    """The id a payload starts with, as the hub writes it; "unknown" if it has none."""
    found = _LEADING_ID.match(payload)
    return found.group(1).decode(errors="replace") if found else "unknown"


class CommandRejectedError(Exception):
    """A command refused before it ran; the message is the reason sent to the hub."""


def read_command(payload: bytes) -> dict[str, Any]:
    """The command's fields; CommandRejectedError with the reason for a payload over
    MAX_COMMAND_BYTES (left unread) or one that is not a JSON object. pydantic's parser
    is not recursive and refuses nesting deeper than a few hundred levels, integers
    Python could not convert (4,300 digits), NaN, invalid UTF-8 and lone surrogates."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejectedError(f"{len(payload)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        fields = from_json(payload, allow_inf_nan=False)
    except ValueError as exc:
        raise CommandRejectedError(f"invalid JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise CommandRejectedError("not a JSON object")
    return fields


class CommandFailedError(Exception):
    """An accepted command that could not be carried out."""


class SeenCommands:
    """Command ids already handled, kept on disk until their expiry so a restart does
    not reopen the door to replays."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen_commands (id TEXT PRIMARY KEY, expires_at TEXT)"
        )
        self._lock = threading.Lock()

    def remember(self, command_id: str, expires_at: datetime, now: datetime) -> bool:
        """Records the id; False if it was already there (a replay)."""
        with self._lock:
            self._db.execute("DELETE FROM seen_commands WHERE expires_at < ?", (now.isoformat(),))
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO seen_commands VALUES (?, ?)",
                (command_id, expires_at.isoformat()),
            ).rowcount
        return bool(inserted)


class LogRing(logging.Handler):
    """The agent's recent log lines, for FETCH_LOGS."""

    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class CommandHandler:
    def __init__(
        self,
        node_id: str,
        secret: bytes,
        device: SunSpecDevice,
        seen: SeenCommands,
        logs: LogRing,
        send: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], datetime],
        restart: Callable[[], None],
        safety_lock: SafetyLock,
        config_push: ConfigPush | None = None,
        self_update: SelfUpdate | None = None,
        apply_deadline_s: float = 120.0,
        tunnel: Tunnel | None = None,
    ) -> None:
        """`tunnel`: None when remote access is off on this node (`tunnel_enabled`)."""
        self.node_id = node_id
        self.secret = secret
        self.device = device
        self.seen = seen
        self.logs = logs
        self.send = send  # (kind, body): publishes on nodes/{id}/{kind}
        self.clock = clock
        self.restart = restart
        self.safety_lock = safety_lock
        self.config_push = config_push
        self.self_update = self_update
        self.apply_deadline_s = apply_deadline_s
        self.tunnel = tunnel
        self.last_results: deque[dict[str, Any]] = deque(maxlen=20)

    def ack(self, command_id: str, state: AckState, detail: str = "") -> None:
        """Publishes an ack built (and validated) by the contract's model."""
        body = Ack(
            id=command_id,
            state=state,
            detail=_quotable(detail, MAX_ACK_DETAIL_CHARS),
            ts=self.clock(),
        ).model_dump(mode="json")
        self.send("acks", body)
        if state != "received":
            self.last_results.append(body)
        log.info("command %s %s %s", command_id, state, detail)

    def handle(self, payload: bytes) -> None:
        """Checks and runs one command message (any bytes); every outcome is acked, a
        refusal under the command's id when one can be read, else as "unknown"."""
        command_id = _leading_id(payload)
        try:
            fields = read_command(payload)
            if isinstance(fields.get("id"), str):
                command_id = _quotable(fields["id"], MAX_COMMAND_ID_CHARS) or "unknown"
            envelope, params = self._check(fields)
        except CommandRejectedError as exc:
            self.ack(command_id, "rejected", str(exc))
            return
        self.ack(envelope.id, "received")
        try:
            if envelope.type is CommandType.CONFIG_PUSH:
                # Its outcome is acked after the restart (edge/config_push.py).
                self._stage_config(envelope.id, params)
                self.restart()
                return
            if envelope.type is CommandType.SELF_UPDATE:
                # Likewise (edge/self_update.py).
                self._stage_update(envelope.id, params)
                self.restart()
                return
            if envelope.type is CommandType.SAFETY_LOCK:
                detail = self.safety_lock.apply_remote(envelope.id, envelope.issued_at, params)
            else:
                detail = self._execute(envelope.id, envelope.type, params)
        except (CommandFailedError, InverterError, SafetyLockError) as exc:
            self.ack(envelope.id, "failed", str(exc))
            return
        self.ack(envelope.id, "succeeded", detail)
        if envelope.type is CommandType.RESTART_AGENT:
            self.restart()

    def _check(self, fields: dict[str, Any]) -> tuple[CommandEnvelope, Any]:
        command_type = fields.get("type")
        if not (isinstance(command_type, str) and command_type in _COMMAND_TYPES):
            raise CommandRejectedError(f"unknown command type {command_type!r}")
        try:
            envelope = CommandEnvelope.model_validate(fields)
        except ValidationError as exc:
            raise CommandRejectedError(f"malformed command: {exc.errors()[0]['msg']}") from exc
        if not verify(self.node_id, fields, self.secret):
            raise CommandRejectedError("bad signature")
        now = self.clock()
        if envelope.expires_at <= now:
            raise CommandRejectedError(f"expired at {envelope.expires_at.isoformat()}")
        if not self.seen.remember(envelope.id, envelope.expires_at, now):
            raise CommandRejectedError("replayed: this command id was already handled")
        try:
            params = validate_params(envelope.type, envelope.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CommandRejectedError(f"bad params: {where}: {first['msg']}") from exc
        # Checked when the command arrives, so one queued or in flight before the lock
        # was set is refused too.
        if refused_while_locked(envelope.type):
            refusal = self.safety_lock.refusal(envelope.type)
            if refusal is not None:
                raise CommandRejectedError(refusal)
        if envelope.type in _TUNNEL_COMMANDS and self.tunnel is None:
            raise CommandRejectedError("remote access is off on this node (tunnel_enabled: false)")
        return envelope, params

    # -- executors -------------------------------------------------------------------

    def _execute(self, command_id: str, command_type: CommandType, params: Any) -> str:
        if command_type is CommandType.FORCE_CHARGE:
            return self._storage(STORCTL_CHARGE, "InWRte", params)
        if command_type is CommandType.DISCHARGE:
            return self._storage(STORCTL_DISCHARGE, "OutWRte", params)
        if command_type is CommandType.SET_MODE:
            return self._set_mode(params)
        if command_type is CommandType.FETCH_LOGS:
            return self._fetch_logs(command_id, params)
        if command_type is CommandType.OPEN_TUNNEL:
            return self._open_tunnel(params)
        if command_type is CommandType.CLOSE_TUNNEL:
            return self._close_tunnel(params)
        if command_type is CommandType.RESTART_AGENT:
            return "restarting"
        raise CommandFailedError(f"{command_type.value} is not supported by this agent version")

    def _open_tunnel(self, params: OpenTunnelParams) -> str:
        assert self.tunnel is not None  # refused in _check otherwise
        try:
            return self.tunnel.open(params)
        except TunnelError as exc:
            raise CommandFailedError(f"tunnel not opened: {exc}") from exc

    def _close_tunnel(self, params: CloseTunnelParams) -> str:
        assert self.tunnel is not None
        if self.tunnel.close(f"closed by {params.requested_by}"):
            return "tunnel closed"
        return "no tunnel was open"

    def _stage_config(self, command_id: str, params: ConfigPushParams) -> None:
        if self.config_push is None:
            raise CommandFailedError("this agent runs without a config file")
        deadline = self.clock() + timedelta(seconds=self.apply_deadline_s)
        try:
            self.config_push.stage(
                command_id, params.version, params.config, self.node_id, deadline
            )
        except ConfigPushError as exc:
            raise CommandFailedError(str(exc)) from exc

    def _stage_update(self, command_id: str, params: SelfUpdateParams) -> None:
        if self.self_update is None:
            raise CommandFailedError("this agent cannot update itself")
        deadline = self.clock() + timedelta(seconds=self.apply_deadline_s)
        try:
            self.self_update.stage(command_id, params.version, deadline)
        except SelfUpdateError as exc:
            raise CommandFailedError(f"update to {params.version} failed: {exc}") from exc

    def _write_verified(self, values: dict[str, float]) -> dict[str, Any]:
        """Writes model 124 points and reads them back; CommandFailedError if they differ."""
        if not self.device.models:
            self.device.discover()
        if 124 not in self.device.models:
            raise CommandFailedError("the inverter has no storage model (124)")
        self.device.write(124, values)
        after = self.device.read_model(124)
        for name, wanted in values.items():
            got = after.get(name)
            if got is None or abs(float(got) - wanted) > 0.5:
                raise CommandFailedError(f"read back {name}={got}, wrote {wanted}")
        return after

    def _storage(self, mode: int, rate_point: str, params: PowerParams) -> str:
        if not self.device.models:
            self.device.discover()
        storage = self.device.read_model(124)
        max_w = storage.get("WChaMax")
        if not max_w:
            raise CommandFailedError("the inverter does not report its battery power limit")
        percent = min(100.0, params.power_w / float(max_w) * 100)
        self._write_verified(
            {
                rate_point: round(percent, 1),
                "InOutWRte_RvrtTms": params.duration_s,
                "StorCtl_Mod": mode,
            }
        )
        return f"{rate_point}={percent:.1f}% of {max_w:g} W for {params.duration_s} s"

    def self_consumption(self) -> None:
        """Puts the inverter in its own self-consumption mode (SET_MODE SELF_CONSUMPTION);
        raises CommandFailedError or InverterError when it did not take it."""
        self._write_verified({"StorCtl_Mod": STORCTL_AUTO})

    def _set_mode(self, params: SetModeParams) -> str:
        if params.mode == "PASSIVE":
            values = {"InWRte": 0.0, "OutWRte": 0.0, "StorCtl_Mod": STORCTL_HOLD}
        elif params.mode == "BACKUP":
            values = {"MinRsvPct": 100.0, "StorCtl_Mod": STORCTL_AUTO}
        else:  # AUTO and SELF_CONSUMPTION: the inverter's own self-consumption
            values = {"StorCtl_Mod": STORCTL_AUTO}
        self._write_verified(values)
        return f"mode {params.mode}"

    def _fetch_logs(self, command_id: str, params: FetchLogsParams) -> str:
        """The newest `params.lines` log lines, oldest first, as `LogChunk`s within the
        contract's bounds: a line too long is cut, NUL and lone surrogates replaced; when
        the lines need more than MAX_LOG_CHUNKS chunks, the oldest are left out."""
        lines = [
            storable(line)[:MAX_LOG_LINE_CHARS] for line in list(self.logs.lines)[-params.lines :]
        ]
        parts = _log_parts(lines)[-MAX_LOG_CHUNKS:]
        for index, part in enumerate(parts):
            chunk = LogChunk(command_id=command_id, chunk=index, of=len(parts), lines=part)
            self.send("logs", chunk.model_dump(mode="json"))
        sent = sum(len(part) for part in parts)
        left_out = f", the oldest {len(lines) - sent} left out" if sent < len(lines) else ""
        return f"{sent} lines in {len(parts)} chunks{left_out}"


def _log_parts(lines: list[str]) -> list[list[str]]:
    """The lines split, in order, into runs of at most MAX_LOG_CHUNK_LINES whose chunk's
    JSON (as `Publisher.send` writes it: json.dumps) stays within MAX_LOG_CHUNK_BYTES."""
    budget = MAX_LOG_CHUNK_BYTES - _LOG_CHUNK_OVERHEAD_BYTES
    parts: list[list[str]] = []
    used = budget + 1  # start a part with the first line
    for line in lines:
        size = len(json.dumps(line)) + 2  # quoted and escaped, and ", " before the next
        if used + size > budget or len(parts[-1]) >= MAX_LOG_CHUNK_LINES:
            parts.append([])
            used = 0
        parts[-1].append(line)
        used += size
    return parts

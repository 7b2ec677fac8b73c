"""The command whitelist, its typed parameters, acks, and HMAC-SHA256 signing.

A command travels as `{"id", "type", "params", "issued_at", "expires_at", "sig"}` on
`nodes/{node_id}/commands`. The signature covers the node id and every other field, in a
canonical JSON form, under the node's own secret, so a command cannot be replayed to
another node or altered in flight. The node answers with `Ack`s on `nodes/{node_id}/acks`,
and a FETCH_LOGS with `LogChunk`s on `nodes/{node_id}/logs`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contract.node_time import NodeTime
from contract.site_control import LockHolder, LockReason
from contract.telemetry import MAX_POWER_W
from contract.text import STORABLE
from contract.tunnel import (
    DEFAULT_TUNNEL_DURATION,
    BastionHost,
    BastionUser,
    Reason,
    RemotePort,
    Requester,
    SshPublicKey,
    TunnelSeconds,
)


class CommandType(StrEnum):
    FORCE_CHARGE = "FORCE_CHARGE"
    DISCHARGE = "DISCHARGE"
    SET_MODE = "SET_MODE"
    RESTART_AGENT = "RESTART_AGENT"
    CONFIG_PUSH = "CONFIG_PUSH"
    SELF_UPDATE = "SELF_UPDATE"
    FETCH_LOGS = "FETCH_LOGS"
    OPEN_TUNNEL = "OPEN_TUNNEL"
    CLOSE_TUNNEL = "CLOSE_TUNNEL"
    SAFETY_LOCK = "SAFETY_LOCK"


class CommandKind(StrEnum):
    """What a command does to a site, which decides whether the safety lock refuses it
    (contract/site_control.py): the agent and the hub both read `COMMAND_KINDS`."""

    # Changes what the site does, runs or lets in: refused while the site is locked.
    CONTROL = "control"
    # Reads and changes nothing.
    READ_ONLY = "read_only"
    # The lock itself, and taking remote access away: never refused by the lock.
    SAFETY = "safety"


COMMAND_KINDS: dict[CommandType, CommandKind] = {
    CommandType.FORCE_CHARGE: CommandKind.CONTROL,
    CommandType.DISCHARGE: CommandKind.CONTROL,
    CommandType.SET_MODE: CommandKind.CONTROL,
    CommandType.RESTART_AGENT: CommandKind.CONTROL,
    CommandType.CONFIG_PUSH: CommandKind.CONTROL,
    CommandType.SELF_UPDATE: CommandKind.CONTROL,
    # A shell on the Pi can change anything on it.
    CommandType.OPEN_TUNNEL: CommandKind.CONTROL,
    CommandType.FETCH_LOGS: CommandKind.READ_ONLY,
    CommandType.CLOSE_TUNNEL: CommandKind.SAFETY,
    CommandType.SAFETY_LOCK: CommandKind.SAFETY,
}


def refused_while_locked(command_type: CommandType) -> bool:
    return COMMAND_KINDS[command_type] is CommandKind.CONTROL


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class PowerParams(_Params):
    """FORCE_CHARGE and DISCHARGE: battery power and how long to hold it."""

    power_w: Annotated[float, Field(gt=0, le=MAX_POWER_W)]
    duration_s: Annotated[int, Field(gt=0, le=24 * 3600)]


class SetModeParams(_Params):
    mode: Literal["AUTO", "SELF_CONSUMPTION", "PASSIVE", "BACKUP"]


class NoParams(_Params):
    pass


class ConfigPushParams(_Params):
    """The whole agent config; the agent validates it against its own model."""

    config: dict[str, Any]
    version: Annotated[int, Field(ge=1)]


class SelfUpdateParams(_Params):
    version: Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+){0,3}([ab]|rc)?[0-9]*$")]


class FetchLogsParams(_Params):
    lines: Annotated[int, Field(ge=1, le=10_000)] = 500


class OpenTunnelParams(_Params):
    """A reverse SSH tunnel from the node to `bastion_user@bastion_host:bastion_port`,
    whose host key must be `bastion_host_key`, listening there on
    `localhost:remote_port` for `duration_s` (contract/tunnel.py)."""

    bastion_host: BastionHost
    bastion_port: Annotated[int, Field(ge=1, le=65535)] = 22
    bastion_user: BastionUser = "tunnel"
    bastion_host_key: SshPublicKey
    remote_port: RemotePort
    duration_s: TunnelSeconds = int(DEFAULT_TUNNEL_DURATION.total_seconds())
    requested_by: Requester
    reason: Reason


class CloseTunnelParams(_Params):
    requested_by: Requester


class SafetyLockParams(_Params):
    """The hub's (remote) safety lock on (`locked`) or off, by whom and why. Turning it
    off never clears a lock the site holds itself (contract/site_control.py)."""

    locked: bool
    requested_by: LockHolder
    reason: LockReason


PARAMS_BY_TYPE: dict[CommandType, type[_Params]] = {
    CommandType.FORCE_CHARGE: PowerParams,
    CommandType.DISCHARGE: PowerParams,
    CommandType.SET_MODE: SetModeParams,
    CommandType.RESTART_AGENT: NoParams,
    CommandType.CONFIG_PUSH: ConfigPushParams,
    CommandType.SELF_UPDATE: SelfUpdateParams,
    CommandType.FETCH_LOGS: FetchLogsParams,
    CommandType.OPEN_TUNNEL: OpenTunnelParams,
    CommandType.CLOSE_TUNNEL: CloseTunnelParams,
    CommandType.SAFETY_LOCK: SafetyLockParams,
}


def validate_params(command_type: CommandType, params: dict[str, Any]) -> _Params:
    """The typed params for a command; raises pydantic.ValidationError when ill-typed."""
    return PARAMS_BY_TYPE[command_type].model_validate(params)


MAX_COMMAND_ID_CHARS = 64
# A node refuses a larger command unread; the hub's are far smaller (a whole node config
# in a CONFIG_PUSH is about 2 KB).
MAX_COMMAND_BYTES = 64 * 1024
# PostgreSQL text cannot hold NUL: an ack whose id or detail carried one could never be
# stored by the hub, so such an ack is malformed (and a command id with one never valid).
_WITHOUT_NUL = r"^[^\x00]*$"
# The id of a command and of the acks about it.
CommandId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_COMMAND_ID_CHARS, pattern=_WITHOUT_NUL)
]


class CommandEnvelope(BaseModel):
    """A signed command as published to a node."""

    model_config = ConfigDict(extra="forbid")

    id: CommandId
    type: CommandType
    params: dict[str, Any]
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    sig: str


AckState = Literal["received", "succeeded", "failed", "rejected"]
MAX_ACK_DETAIL_CHARS = 2_000


class Ack(BaseModel):
    """A node's answer about one command, on `nodes/{node_id}/acks`; the node builds its
    body from this model too."""

    model_config = ConfigDict(extra="ignore")

    id: CommandId
    state: AckState
    detail: Annotated[
        str, StringConstraints(max_length=MAX_ACK_DETAIL_CHARS, pattern=_WITHOUT_NUL)
    ] = ""
    ts: NodeTime


# A FETCH_LOGS answer's bounds. A chunk's JSON is at most MAX_LOG_CHUNK_BYTES (the hub
# reads no larger one), holds at most MAX_LOG_CHUNK_LINES lines of MAX_LOG_LINE_CHARS
# each, and a command has at most MAX_LOG_CHUNKS chunks: at most 6.25 MiB, and never more
# lines than the command asked for (the hub checks that against the stored command).
MAX_LOG_CHUNK_LINES = 200
MAX_LOG_LINE_CHARS = 1_000
MAX_LOG_CHUNK_BYTES = 64 * 1024
MAX_LOG_CHUNKS = 100
LogLine = Annotated[str, StringConstraints(max_length=MAX_LOG_LINE_CHARS), STORABLE]


class LogChunk(BaseModel):
    """One part of a node's answer to a FETCH_LOGS, on `nodes/{node_id}/logs`: chunk
    `chunk` (from 0) of `of`, for command `command_id`. The node builds its body from this
    model too. Strict: a number in a string, a bool for a number, is refused."""

    model_config = ConfigDict(extra="ignore", strict=True)

    command_id: CommandId
    chunk: Annotated[int, Field(ge=0, lt=MAX_LOG_CHUNKS)]
    of: Annotated[int, Field(ge=1, le=MAX_LOG_CHUNKS)]
    lines: Annotated[list[LogLine], Field(max_length=MAX_LOG_CHUNK_LINES)]

    @model_validator(mode="after")
    def _chunk_within(self) -> LogChunk:
        if self.chunk >= self.of:
            raise ValueError(f"chunk {self.chunk} of {self.of}: chunks count from 0")
        return self


def _canonical(node_id: str, fields: dict[str, Any]) -> bytes:
    body = {k: v for k, v in fields.items() if k != "sig"}
    body["node_id"] = node_id
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sign(node_id: str, fields: dict[str, Any], secret: bytes) -> str:
    """Hex HMAC-SHA256 of the command's fields (any `sig` key is ignored)."""
    return hmac.new(secret, _canonical(node_id, fields), hashlib.sha256).hexdigest()


def build_command(
    node_id: str,
    secret: bytes,
    command_id: str,
    command_type: CommandType,
    params: _Params,
    issued_at: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """The JSON-ready, signed command body for `nodes/{node_id}/commands`."""
    fields: dict[str, Any] = {
        "id": command_id,
        "type": command_type.value,
        "params": params.model_dump(mode="json"),
        "issued_at": issued_at.isoformat(),
        "expires_at": expires_at.isoformat(),
    }
    fields["sig"] = sign(node_id, fields, secret)
    return fields


def verify(node_id: str, fields: dict[str, Any], secret: bytes) -> bool:
    """True when `fields["sig"]` is this node's signature over the received fields."""
    sig = fields.get("sig")
    # compare_digest refuses str with non-ASCII characters (TypeError); a signature is
    # hex, so such a one is simply wrong.
    if not isinstance(sig, str) or not sig.isascii():
        return False
    return hmac.compare_digest(sign(node_id, fields, secret), sig)

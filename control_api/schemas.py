"""Request and response bodies of the API (the wire contract with nodes lives in
`contract/`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from contract.commands import MAX_COMMAND_ID_CHARS, MAX_LOG_CHUNKS
from contract.inventory import (
    AgentInventory,
    BatteryInventory,
    InverterInventory,
    MeterInventory,
)
from contract.site_control import LockReason
from contract.tariff import TariffVersion, TimeZoneName
from contract.text import PRINTABLE, STORABLE
from contract.topics import NODE_ID_PATTERN
from contract.tunnel import DEFAULT_TUNNEL_DURATION, Reason, RemotePort, TunnelSeconds
from control_api.identity import normalized_email

# Every string a request carries is bounded and STORABLE (no NUL, no lone surrogate:
# contract/text.py), in bodies, paths and queries alike.
Role = Literal["admin", "operator", "viewer"]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"), STORABLE]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), STORABLE]
DisplayName = Annotated[str, StringConstraints(max_length=200), STORABLE]
Password = Annotated[str, StringConstraints(min_length=12, max_length=256), STORABLE]
# What a login may try: any password an account could have (the length rule above is
# for setting one).
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=256), STORABLE]
# An account's email, as stored and looked up: normalized where it enters.
Email = Annotated[
    str,
    StringConstraints(min_length=1, max_length=320),
    STORABLE,
    AfterValidator(normalized_email),
    Field(json_schema_extra={"format": "email"}),
]
# The same, to look an account up by (GET /audit?actor_email=).
EmailQuery = Annotated[
    str, Query(min_length=1, max_length=320), STORABLE, AfterValidator(normalized_email)
]
# An audit row's action: a route's name (or the hub's own, such as push_site_settings).
AuditActionQuery = Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
TotpCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$"), STORABLE]
NodeIdStr = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN), STORABLE]
NodeIdPath = Annotated[str, Path(pattern=NODE_ID_PATTERN), STORABLE]
NodeIdQuery = Annotated[str, Query(pattern=NODE_ID_PATTERN), STORABLE]
CommandIdPath = Annotated[str, Path(min_length=1, max_length=MAX_COMMAND_ID_CHARS), STORABLE]
CommandIdQuery = Annotated[str, Query(min_length=1, max_length=MAX_COMMAND_ID_CHARS), STORABLE]
# A page of a command's log chunks: where it starts, and how many chunks at most.
LogChunkQuery = Annotated[int, Query(ge=0, lt=MAX_LOG_CHUNKS)]
LogLimitQuery = Annotated[int, Query(ge=1, le=MAX_LOG_CHUNKS)]
# GET /nodes?model=&firmware=: an inverter model or firmware version, exact, or a
# prefix when it ends in `*` (the only place a `*` may be).
InventoryFilterQuery = Annotated[
    str,
    Query(min_length=1, max_length=33, pattern=r"^[^*]+\*?$"),
    STORABLE,
    PRINTABLE,
]
# Database ids are bigint: a larger number is not an id, not a server error.
MAX_DB_ID = 2**63 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]
DbIdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID)]
DbIdQuery = Annotated[int, Query(ge=1, le=MAX_DB_ID)]
# An IANA time zone (contract/tariff.py), e.g. "Europe/Warsaw".
TimeZone = Annotated[TimeZoneName, Field(examples=["Europe/Warsaw", "UTC"])]
# Allow what would rewrite history: a tariff version from before today, replacing one,
# or deleting one already in force. Audited as given.
BackdateQuery = Annotated[
    bool, Query(description="allow a change to days already begun (audited as such)")
]


class ErrorOut(BaseModel):
    """Every error answer: a message, or pydantic's list of what was invalid."""

    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": description}
    for code, description in (
        (400, "the request cannot be carried out as asked"),
        (401, "not authenticated"),
        (403, "the caller's role may not do this"),
        (404, "no such object, or not one the caller may see"),
        (409, "conflicts with the current state"),
        (422, "invalid input"),
        (503, "the database, broker or audit log is unavailable"),
    )
}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretOut(BaseModel):
    """An answer that carries a secret (a token, a password, a key, a TOTP seed): the
    request that got it is audited even when it is a read (control_api/request_audit.py)."""


class LoginIn(_In):
    email: Email
    password: LoginPassword
    totp_code: TotpCode | None = None


class TokenOut(SecretOut):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type


class TotpSetupOut(SecretOut):
    secret: str
    otpauth_uri: str


class TotpSetupIn(_In):
    """Proof that the caller is the account's owner, not only a token's holder."""

    password: LoginPassword
    # Required while TOTP is on.
    code: TotpCode | None = None


class TotpConfirmIn(_In):
    code: TotpCode


class UserOut(BaseModel):
    id: int
    email: str
    role: Role
    tenant_id: int | None
    totp_enabled: bool
    disabled: bool
    created_at: datetime


class UserIn(_In):
    email: Email
    password: Password
    role: Role
    tenant_id: DbId | None = None


class UserPatch(_In):
    role: Role | None = None
    tenant_id: DbId | None = None
    password: Password | None = None
    disabled: bool | None = None


class TenantIn(_In):
    slug: Slug
    name: Name
    # Where its sites are unless a site says otherwise.
    timezone: TimeZone = "UTC"


class TenantPatch(_In):
    name: Name | None = None
    timezone: TimeZone | None = None


class TenantOut(BaseModel):
    id: int
    slug: str
    name: str
    timezone: str
    created_at: datetime
    database_role: str | None


class PushedOut(BaseModel):
    """A CONFIG_PUSH carrying a node's new zone and tariffs."""

    node_id: str
    command_id: str
    version: int
    state: str


class SkippedOut(BaseModel):
    node_id: str
    reason: str


class ConfigPushesOut(BaseModel):
    """What a change of zone or tariffs sent to the nodes it concerns, and why a node
    got nothing."""

    pushed: list[PushedOut]
    skipped: list[SkippedOut]


class TenantChangeOut(TenantOut):
    config_pushes: ConfigPushesOut


class DatabaseRoleOut(SecretOut):
    """The tenant's database login for its Grafana datasource; the password is shown
    only in this answer."""

    role: str
    password: str


class InventoryOut(BaseModel):
    """The node's newest device inventory (contract/inventory.py): `reported_at` is when
    the node read it (its clock), `received_at` when the hub stored it."""

    reported_at: datetime
    received_at: datetime
    inverter: InverterInventory
    battery: BatteryInventory | None
    meter: MeterInventory | None
    agent: AgentInventory


class NodeOut(BaseModel):
    id: str
    tenant_id: int
    display_name: str
    # The site's own zone; null: its tenant's.
    timezone: str | None
    # The zone its days and hours are counted in: its own, else its tenant's.
    effective_timezone: str
    enabled: bool
    created_at: datetime
    state: str
    last_seen_at: datetime | None
    agent_version: str | None
    clock_drift_s: float | None
    # The remote debug tunnel as the node's newest heartbeat reported it (null: never
    # reported); `tunnel_public_key` null: remote access is off on the node.
    tunnel_state: str | None = None
    tunnel_until: datetime | None = None
    tunnel_remote_port: int | None = None
    tunnel_detail: str | None = None
    tunnel_public_key: str | None = None
    # What the node talks to, as it last reported (null: never reported).
    inventory: InventoryOut | None = None
    # The safety lock and dynamic strategy as the newest heartbeat reported them (null:
    # never reported); GET /nodes/{id}/safety-lock adds a hub lock on its way.
    safety_locked: bool | None = None
    safety_lock_source: str | None = None
    safety_lock_reason: str | None = None
    strategy_enabled: bool | None = None
    strategy: str | None = None


class NodeChangeOut(NodeOut):
    config_pushes: ConfigPushesOut


class SafetyLockIn(_In):
    """PUT /nodes/{id}/safety-lock: why (audited, and shown on the site)."""

    reason: LockReason


class SafetyLockOut(BaseModel):
    """A site's safety lock as the hub sees it: locked when the site reports it, or
    while the hub's lock command is on its way (`pending_command_id`). `source` local:
    the site holds it (only the site lifts it); remote: an admin does. `reported_*`:
    the site's last heartbeat (null: never reported); `strategy_*`: its dynamic
    strategy as reported. `ahead_of_lock`: the control commands issued before the
    pending lock that the node has not received yet: they reach it first, and run."""

    locked: bool
    source: str | None
    by: str | None
    reason: str | None
    since: datetime | None
    pending_command_id: str | None
    ahead_of_lock: list[str]
    reported_locked: bool | None
    reported_at: datetime | None
    strategy_enabled: bool | None
    strategy: str | None


class TunnelIn(_In):
    """POST /nodes/{id}/tunnel: why, for how long (seconds, at most 4 hours), and the
    bastion port the node's key may listen on (its `permitlisten` there)."""

    reason: Reason
    duration_s: TunnelSeconds = int(DEFAULT_TUNNEL_DURATION.total_seconds())
    remote_port: RemotePort


class NodeIn(_In):
    id: NodeIdStr
    tenant_id: DbId
    display_name: DisplayName = ""
    # Null: the tenant's.
    timezone: TimeZone | None = None


class NodePatch(_In):
    tenant_id: DbId | None = None
    display_name: DisplayName | None = None
    # Given as null: the tenant's again; left out: unchanged.
    timezone: TimeZone | None = None


class NodeCredentialsOut(SecretOut):
    """Shown once: the node's broker login and command key, for its config file."""

    node_id: str
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    node_secret: str


class CommandEventOut(BaseModel):
    ts: datetime
    state: str
    source: str
    detail: str
    applied: bool


class CommandOut(BaseModel):
    id: str
    node_id: str
    tenant_id: int
    type: str
    params: dict[str, Any]
    state: str
    detail: str
    queued: bool
    issued_by: int | None
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime


class LogSummaryOut(BaseModel):
    """What a FETCH_LOGS command's node has sent so far: `of` is how many chunks it
    announced (None before the first arrived)."""

    chunks_received: int
    of: int | None
    lines_received: int


class CommandDetailOut(CommandOut):
    events: list[CommandEventOut]
    # FETCH_LOGS only; read the lines with GET /nodes/{node_id}/logs?command_id=
    logs: LogSummaryOut | None


class LogChunkOut(BaseModel):
    chunk: int
    received_at: datetime
    lines: list[str]


class NodeLogsOut(LogSummaryOut):
    node_id: str
    command_id: str
    chunks: list[LogChunkOut]
    # Ask again with from_chunk=next_chunk for the next page; None after the last chunk.
    next_chunk: int | None


class CommandAcceptedOut(BaseModel):
    id: str
    state: str


class NodeConfigIn(_In):
    # PUT: the whole config; PATCH: a JSON merge patch (RFC 7396) of it.
    config: dict[str, Any]


class ConfigPushOut(CommandAcceptedOut):
    """The CONFIG_PUSH issued, with the version and the whole config it pushes."""

    version: int
    config: dict[str, Any]


class NodeConfigOut(BaseModel):
    node_id: str
    # "reported": what the node says it runs (its effective config, secrets left out);
    # "pushed": the newest version pushed, for an agent that does not report its config.
    source: Literal["reported", "pushed"]
    # The push the config came from; None for a node that has run no pushed config.
    version: int | None
    config: dict[str, Any]
    # Of a pushed version; None for a reported config.
    command_id: str | None
    # When the node reported it (its clock); None for a pushed version.
    reported_at: datetime | None
    # When the hub stored it.
    created_at: datetime


class TariffVersionOut(TariffVersion):
    created_by: int | None
    created_at: datetime


class TariffSetOut(TariffVersionOut):
    # Whether it replaced a version of the same valid_from.
    replaced: bool
    config_pushes: ConfigPushesOut


class TariffDeletedOut(BaseModel):
    valid_from: date
    config_pushes: ConfigPushesOut


class TimelineVersionOut(TariffVersion):
    # Whose version: the tenant's, or the site's own.
    source: Literal["tenant", "site"]
    # The day the next version takes over (in force up to its local midnight); null for
    # the last.
    valid_until: date | None
    # In force today, in the site's zone.
    in_force: bool


class TariffTimelineOut(BaseModel):
    """Which tariff versions price the site's days, in its zone, oldest first."""

    node_id: str
    timezone: str
    today: date
    versions: list[TimelineVersionOut]


class AuditRowOut(BaseModel):
    id: int
    ts: datetime
    actor_user_id: int | None
    actor_email: str | None
    tenant_id: int | None
    node_id: str | None
    action: str
    params: dict[str, Any]
    outcome: str
    status_code: int | None
    client_addr: str | None
    hash: str


class AuditPageOut(BaseModel):
    rows: list[AuditRowOut]
    # Pass as `cursor` for the next, older page; null after the last page.
    next_cursor: int | None


class AuditVerifyOut(BaseModel):
    ok: bool
    checked: int
    bad_rows: list[int]

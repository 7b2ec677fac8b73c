"""The append-only audit log and its hash chain.

Each row's hash is SHA-256 over the previous row's hash and the row's own content in a
canonical JSON form. Rows are chained under a transaction-scoped advisory lock, so two
writers cannot both extend the same predecessor. The database refuses UPDATE and
DELETE (a trigger); the chain catches what a superuser does with the trigger disabled:
an edited row no longer matches its hash, and a deleted row breaks the link of the next.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, text

from contract.text import storable_json
from control_api.errors import InvalidError

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key that serializes appends to the chain ("wattfleet" audit).
CHAIN_LOCK_KEY = 0x5741_5454_4155_4449


@dataclass(frozen=True)
class AuditEntry:
    action: str
    outcome: str
    actor_user_id: int | None = None
    actor_email: str | None = None
    tenant_id: int | None = None
    node_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    status_code: int | None = None
    client_addr: str | None = None


class RecordChange(Protocol):
    """Writes the audit row of the request's change inside the change's transaction
    (before its commit), naming the tenant the change concerns when the caller could not
    know it beforehand."""

    def __call__(
        self, conn: Connection, params: dict[str, Any], *, tenant_id: int | None = None
    ) -> None: ...


class NoteAttempt(Protocol):
    """Notes what the request attempts (a command's type and parameters), for its audit
    row if it is refused (AuditMiddleware's): a refusal then says what was refused, as
    the row of a change says what was changed."""

    def __call__(self, params: dict[str, Any]) -> None: ...


def _content(ts: datetime, entry: AuditEntry) -> dict[str, Any]:
    # PostgreSQL cannot hold NUL or a lone surrogate: an attempt that carried one is
    # still recorded, with U+FFFD in its place.
    content: dict[str, Any] = storable_json(
        {
            "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor_user_id": entry.actor_user_id,
            "actor_email": entry.actor_email,
            "tenant_id": entry.tenant_id,
            "node_id": entry.node_id,
            "action": entry.action,
            "params": entry.params,
            "outcome": entry.outcome,
            "status_code": entry.status_code,
            "client_addr": entry.client_addr,
        }
    )
    return content


def row_hash(prev_hash: str, ts: datetime, entry: AuditEntry) -> str:
    body = json.dumps(
        {"prev_hash": prev_hash, **_content(ts, entry)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def append(conn: Connection, entry: AuditEntry) -> int:
    """Appends one row inside the caller's transaction (it commits with the caller's
    change, or not at all); returns its id."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
    prev = conn.execute(text("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")).scalar()
    prev_hash = prev or GENESIS_HASH
    # Microseconds: what timestamptz keeps, so the hash can be recomputed from the row.
    ts = datetime.now(UTC)
    content = _content(ts, entry)
    row_id = conn.execute(
        text(
            """
            INSERT INTO audit_log (ts, actor_user_id, actor_email, tenant_id, node_id, action,
                params, outcome, status_code, client_addr, prev_hash, hash)
            VALUES (:ts, :actor_user_id, :actor_email, :tenant_id, :node_id, :action,
                CAST(:params AS jsonb), :outcome, :status_code, :client_addr, :prev_hash, :hash)
            RETURNING id
            """
        ),
        {
            **content,
            "ts": ts,
            "params": json.dumps(content["params"]),
            "prev_hash": prev_hash,
            "hash": row_hash(prev_hash, ts, entry),
        },
    ).scalar_one()
    return int(row_id)


Outcome = Literal[
    "ok", "denied", "invalid", "not_found", "conflict", "rate_limited", "unavailable", "error"
]


@dataclass(frozen=True)
class AuditFilter:
    """What `GET /audit` asks for; each given field narrows the rows (all must match).
    `since` is inclusive, `until` exclusive; both timezone-aware."""

    actor_user_id: int | None = None
    actor_email: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    node_id: str | None = None
    tenant_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    # The id to pass as `cursor` for the next (older) page; None after the last one.
    next_cursor: int | None


# The outcome a tenant's reader sees: a look at another tenant's object shows as
# `not_found`, the answer its caller got, like a look at a missing one. The stored row
# says `denied` (what admins read), which would tell a tenant's user that the other
# tenant's id exists.
_TENANT_OUTCOME = "CASE WHEN status_code = 404 THEN 'not_found' ELSE outcome END"
# Each filter's condition; only those given are in the query, so each can use its index.
_CONDITIONS = {
    "actor_user_id": "actor_user_id = :actor_user_id",
    "actor_email": "actor_email = :actor_email",
    "action": "action = :action",
    "node_id": "node_id = :node_id",
    "tenant_id": "tenant_id = :tenant_id",
    "since": "ts >= :since",
    "until": "ts < :until",
}


def page(
    conn: Connection, reader_tenant: int | None, where: AuditFilter, cursor: int | None, limit: int
) -> AuditPage:
    """Up to `limit` rows matching `where`, newest first, older than the row `cursor`
    names when given. A tenant's reader (`reader_tenant`) reads only its tenant's rows,
    with outcomes as that tenant's users were answered. InvalidError when `since` is not
    before `until`."""
    if where.since is not None and where.until is not None and where.since >= where.until:
        raise InvalidError("since must be before until")
    outcome = "outcome" if reader_tenant is None else _TENANT_OUTCOME
    params: dict[str, Any] = {
        name: value
        for name, value in vars(where).items()
        if value is not None and name in _CONDITIONS
    }
    conditions = [_CONDITIONS[name] for name in params]
    if reader_tenant is not None:
        conditions.append("tenant_id = :reader_tenant")
        params["reader_tenant"] = reader_tenant
    if where.outcome is not None:
        conditions.append(f"{outcome} = :outcome")
        params["outcome"] = where.outcome
    if cursor is not None:
        conditions.append("id < :cursor")
        params["cursor"] = cursor
    # Fixed fragments only: every value is a bound parameter.
    found = [
        dict(r)
        for r in conn.execute(
            text(
                f"""
                SELECT id, ts, actor_user_id, actor_email, tenant_id, node_id, action, params,
                    {outcome} AS outcome, status_code, client_addr, hash
                FROM audit_log
                WHERE {" AND ".join(conditions) or "true"}
                ORDER BY id DESC LIMIT :limit
                """
            ),
            {**params, "limit": limit + 1},
        ).mappings()
    ]
    more = len(found) > limit
    return AuditPage(found[:limit], found[limit - 1]["id"] if more else None)


@dataclass(frozen=True)
class ChainReport:
    checked: int
    # Ids of rows whose content does not match their hash, or whose link to the row
    # before them is broken.
    bad_rows: list[int]

    @property
    def ok(self) -> bool:
        return not self.bad_rows


def verify_chain(conn: Connection, batch: int = 5_000) -> ChainReport:
    """Recomputes every row's hash in id order."""
    bad: list[int] = []
    checked = 0
    prev_hash = GENESIS_HASH
    last_id = 0
    while True:
        rows = conn.execute(
            text(
                """
                SELECT id, ts, actor_user_id, actor_email, tenant_id, node_id, action, params,
                    outcome, status_code, client_addr, prev_hash, hash
                FROM audit_log WHERE id > :last_id ORDER BY id LIMIT :batch
                """
            ),
            {"last_id": last_id, "batch": batch},
        ).all()
        if not rows:
            return ChainReport(checked, bad)
        for row in rows:
            entry = AuditEntry(
                action=row.action,
                outcome=row.outcome,
                actor_user_id=row.actor_user_id,
                actor_email=row.actor_email,
                tenant_id=row.tenant_id,
                node_id=row.node_id,
                params=row.params,
                status_code=row.status_code,
                client_addr=row.client_addr,
            )
            if row.prev_hash != prev_hash or row.hash != row_hash(row.prev_hash, row.ts, entry):
                bad.append(row.id)
            prev_hash = row.hash
            last_id = row.id
            checked += 1

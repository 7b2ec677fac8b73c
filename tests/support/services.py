"""Real services for tests: TimescaleDB, Mosquitto with the repo's config, and our own
service processes, each on a free port and stopped by the fixture that started it.

Starting them is the product's code (`control_api/demo/`, what `wattfleet demo` runs);
this module adds what only tests need: a TLS listener, a database of a test's own,
downgrades, the collector's writer process."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command

from control_api.demo import broker as product_broker
from control_api.demo.database import Database as Database
from control_api.demo.database import alembic_config as alembic_config
from control_api.demo.database import migrate as migrate
from control_api.demo.database import open_database
from control_api.demo.database import start_embedded_timescaledb as start_embedded_timescaledb
from control_api.demo.processes import DemoError
from control_api.demo.processes import free_port as free_port
from control_api.demo.processes import service_env as service_env
from control_api.demo.processes import start_module as start_module
from control_api.demo.processes import stop_process as stop_process
from control_api.demo.processes import wait_for as wait_for
from control_api.demo.processes import wait_for_port as wait_for_port
from control_api.demo.services import collector_env as collector_env

REPO = Path(__file__).resolve().parents[2]


def collector_writer_pid(collector_pid: int) -> int:
    """The batch writer process of a running `python -m collector`: its multiprocessing
    child that is not the resource tracker. Found by parent pid in /proc/*/stat rather
    than /proc/<pid>/task/*/children, whose per-thread files vanish as the collector's
    short-lived threads end (that race once failed a test)."""
    writers = [
        pid for pid in _children(collector_pid) if b"spawn_main" in _read(f"/proc/{pid}/cmdline")
    ]
    assert len(writers) == 1, f"expected one writer process among {_children(collector_pid)}"
    return writers[0]


def _children(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            # Field 2, the command name, may hold spaces and ")"; ppid follows the last ")".
            fields = _read(f"{entry}/stat").rpartition(b")")[2].split()
            if len(fields) > 1 and int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


def _read(path: str) -> bytes:
    """A /proc file, or nothing when its process ended while we looked."""
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


# -- TimescaleDB -------------------------------------------------------------------------


def database_from_env(variable: str) -> Database:
    """The TimescaleDB named by `variable`, else a fresh embedded one (stop it after)."""
    return open_database(os.environ.get(variable))


@contextmanager
def empty_database(purpose: str) -> Iterator[Database]:
    """An empty database of its own: a new embedded server, or a new database on the
    native server named by WATTFLEET_TEST_DATABASE_URL (dropped afterwards)."""
    url = os.environ.get("WATTFLEET_TEST_DATABASE_URL")
    if not url:
        db = start_embedded_timescaledb()
        try:
            yield db
        finally:
            db.stop()
        return
    name = f"{purpose}_{secrets.token_hex(5)}"
    admin = Database(url, embedded=False)
    with admin.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    try:
        yield Database(f"{base}/{name}", embedded=False)
    finally:
        with admin.connect() as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def downgrade(db: Database, revision: str) -> None:
    command.downgrade(alembic_config(db), revision)


# -- Mosquitto -------------------------------------------------------------------------


@dataclass
class Broker(product_broker.Broker):
    """The product's broker; with `tls`, its listener serves a certificate for 127.0.0.1
    signed by `ca_file`."""

    tls: bool = False

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.workdir / "ca.crt"
        if self.tls:
            make_certificates(self.workdir)
        super().__post_init__()
        if self.tls:
            self._chown_for_mosquitto([self.workdir / "server.key"])

    def listener_config(self) -> list[str]:
        tls = [
            f"cafile {self.ca_file}",
            f"certfile {self.workdir / 'server.crt'}",
            f"keyfile {self.workdir / 'server.key'}",
        ]
        return super().listener_config() + (tls if self.tls else [])


def make_certificates(d: Path) -> None:
    """A throwaway CA (`ca.crt`) and a server certificate for 127.0.0.1 (`server.crt`,
    `server.key`) in `d`, by the openssl CLI."""
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for args in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=wattfleet test CA",
        ],
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    ):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DemoError(f"{name} is not installed (see .ci/run)")
    return path

"""Real services for tests: the PGlite TimescaleDB server, Mosquitto with the repo's
config, and our own service processes. Each is started on a free port and stopped
by the fixture that started it."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from control_api.broker_security import initial_config
from timescale.database import sqlalchemy_url

REPO = Path(__file__).resolve().parents[2]
PGLITE_DIR = REPO / "tests" / "support" / "pglite"
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)


class ServiceError(Exception):
    """A test service failed to start or died."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Polls until `condition()` is truthy and returns it; raises AssertionError after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    def is_open() -> bool:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(is_open, timeout, f"port {port}")


def collector_writer_pid(collector_pid: int) -> int:
    """The batch writer process of a running `python -m collector`: its multiprocessing
    child that is not the resource tracker."""
    tasks = Path(f"/proc/{collector_pid}/task").iterdir()
    children = [int(c) for t in tasks for c in (t / "children").read_text().split()]
    writers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(writers) == 1, f"expected one writer process among {children}"
    return writers[0]


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# -- TimescaleDB -------------------------------------------------------------------------


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
        return {
            "WATTFLEET_DATABASE_URL": self.url,
            "WATTFLEET_DATABASE_PREPARED_STATEMENTS": str(self.prepared_statements).lower(),
        }

    def connect(self, **kwargs: Any) -> Any:
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("prepare_threshold", 5 if self.prepared_statements else None)
        return psycopg.connect(self.url, **kwargs)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_embedded_timescaledb(data_dir: Path | None = None) -> Database:
    """Starts tests/support/pglite/server.mjs (PGlite + TimescaleDB, WASM)."""
    if not (PGLITE_DIR / "node_modules").exists():
        raise ServiceError(f"run `npm ci --prefix {PGLITE_DIR}` first (see .ci/run)")
    args = ["node", str(PGLITE_DIR / "server.mjs"), "--port", "0"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        stop_process(proc)
        raise ServiceError(f"embedded TimescaleDB did not start: {line!r}")
    port = int(line.split()[1])
    return Database(f"postgresql://postgres@127.0.0.1:{port}/postgres", embedded=True, proc=proc)


def database_from_env(variable: str) -> Database:
    """The TimescaleDB named by `variable`, else a fresh embedded one (stop it after)."""
    url = os.environ.get(variable)
    return Database(url, embedded=False) if url else start_embedded_timescaledb()


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


def alembic_config(db: Database) -> Config:
    config = Config(str(REPO / "timescale" / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(db.url))
    config.attributes["prepare_threshold"] = 5 if db.prepared_statements else None
    return config


def migrate(db: Database, revision: str = "head") -> None:
    command.upgrade(alembic_config(db), revision)


def downgrade(db: Database, revision: str) -> None:
    command.downgrade(alembic_config(db), revision)


# -- Mosquitto -------------------------------------------------------------------------

# Directives the harness replaces: the listener (TLS is an operator's include),
# file locations, logging.
REPLACED_DIRECTIVES = {
    "listener",
    "include_dir",
    "persistence_location",
    "plugin",
    "plugin_opt_config_file",
    "log_dest",
    "log_type",
}


@dataclass
class Broker:
    """A Mosquitto started from mosquitto/mosquitto.conf with fresh accounts."""

    workdir: Path
    port: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[Any] | None = None
    # With tls, the listener serves a certificate for 127.0.0.1 signed by `ca_file`.
    tls: bool = False

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.passwords = {
            name: secrets.token_urlsafe(12) for name in ("admin", "collector", "control-api")
        }
        dynsec = initial_config(
            ("admin", self.passwords["admin"]),
            ("collector", self.passwords["collector"]),
            ("control-api", self.passwords["control-api"]),
        )
        self.dynsec_file = self.data_dir / "dynamic-security.json"
        self.dynsec_file.write_text(json.dumps(dynsec))
        self.ca_file = self.workdir / "ca.crt"
        if self.tls:
            self._make_certificates()
        self.config_file = self.workdir / "mosquitto.conf"
        self.config_file.write_text(self._render_config())
        self._chown_for_mosquitto()

    def _render_config(self) -> str:
        plugin = next((p for p in DYNSEC_PLUGIN_PATHS if Path(p).exists()), None)
        if plugin is None:
            raise ServiceError("mosquitto's dynamic security plugin is not installed")
        kept = []
        for line in (REPO / "mosquitto" / "mosquitto.conf").read_text().splitlines():
            words = line.split()
            if words and not line.startswith("#") and words[0] in REPLACED_DIRECTIVES:
                continue
            kept.append(line)
        kept += [
            f"persistence_location {self.data_dir}/",
            f"plugin {plugin}",
            f"plugin_opt_config_file {self.dynsec_file}",
            f"listener {self.port} 127.0.0.1",
            *(
                [
                    f"cafile {self.ca_file}",
                    f"certfile {self.workdir / 'server.crt'}",
                    f"keyfile {self.workdir / 'server.key'}",
                ]
                if self.tls
                else []
            ),
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            # Not "all": per-message debug lines slow the broker several times over.
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
        ]
        return "\n".join(kept) + "\n"

    def _make_certificates(self) -> None:
        """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
        d = self.workdir
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

    def _chown_for_mosquitto(self) -> None:
        # Started as root, mosquitto drops to its own user: it must own what it writes
        # (sessions, the dynamic-security file), or it silently fails to save them.
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam("mosquitto")
        owned = [self.workdir, self.data_dir, self.dynsec_file]
        if self.tls:
            owned.append(self.workdir / "server.key")
        for path in owned:
            os.chown(path, user.pw_uid, user.pw_gid)
        (self.workdir / "mosquitto.log").touch()
        os.chown(self.workdir / "mosquitto.log", user.pw_uid, user.pw_gid)

    def start(self) -> Broker:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config_file)])
        wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"{name} is not installed (see .ci/run)")
    return path


# -- our own services -------------------------------------------------------------------


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTFLEET_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(overrides)
    return env


def collector_env(
    db: Database, broker: Broker, client_id: str, metrics_port: int, **settings: str
) -> dict[str, str]:
    """The environment of a `python -m collector` on this database and broker; `settings`
    override by setting name (`batch_max_messages="50"`)."""
    return service_env(
        **{
            **db.env(),
            "WATTFLEET_MQTT_HOST": "127.0.0.1",
            "WATTFLEET_MQTT_PORT": str(broker.port),
            "WATTFLEET_MQTT_USERNAME": "collector",
            "WATTFLEET_MQTT_PASSWORD": broker.passwords["collector"],
            "WATTFLEET_MQTT_CLIENT_ID": client_id,
            "WATTFLEET_METRICS_PORT": str(metrics_port),
            **{f"WATTFLEET_{name.upper()}": value for name, value in settings.items()},
        }
    )


def start_module(
    module: str,
    env: dict[str, str],
    log_path: Path,
    *args: str,
    python: str = sys.executable,
    cwd: Path = REPO,
) -> subprocess.Popen[Any]:
    """`python -m module args`; with another interpreter (an installed agent), give a
    `cwd` outside the repo, or `-m` would import the repo's sources instead."""
    log_file = log_path.open("ab")
    return subprocess.Popen(
        [python, "-m", module, *args],
        env=env,
        cwd=cwd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )

"""`wattfleet-collector http-ingest` as a real process over TLS, with a throwaway CA."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from control_api.demo.processes import settings_env
from tests.support.fleet import create_node
from tests.support.services import (
    Database,
    free_port,
    make_certificates,
    service_env,
    start_module,
    stop_process,
    wait_for_port,
)


class HttpIngestProcess:
    def __init__(self, db: Database, workdir: Path, **settings: Any) -> None:
        self.workdir = workdir
        make_certificates(workdir)
        self.ca_file = str(workdir / "ca.crt")
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = workdir / "http-ingest.log"
        own = settings_env(
            {
                "http_ingest_port": self.port,
                "metrics_port": self.metrics_port,
                "http_ingest_tls_cert_file": workdir / "server.crt",
                "http_ingest_tls_key_file": workdir / "server.key",
                "log_level": "DEBUG",
                **settings,
            }
        )
        self.env = service_env(**{**db.env(), **own})
        self.proc: Any = None

    def start(self) -> HttpIngestProcess:
        self.proc = start_module("collector", self.env, self.log_path, "http-ingest")
        wait_for_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def http_ingest(db: Database, **settings: Any) -> Iterator[HttpIngestProcess]:
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-http-ingest-"))
    proc = HttpIngestProcess(db, workdir, **settings)
    try:
        yield proc.start()
    finally:
        proc.stop()
        print(proc.log()[-6000:])  # shown by pytest when a test failed
        shutil.rmtree(workdir, ignore_errors=True)


def node_with_secret(db: Database, tenant_id: int, enabled: bool = True) -> tuple[str, bytes]:
    """A node in the database with a command secret, as enrollment leaves one."""
    node_id = create_node(db, tenant_id, enabled=enabled)
    secret = secrets.token_urlsafe(32)
    with db.connect() as conn:
        conn.execute("UPDATE nodes SET command_secret = %s WHERE id = %s", (secret, node_id))
    return node_id, secret.encode()

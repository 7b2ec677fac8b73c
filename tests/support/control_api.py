"""The control API for tests as a real `python -m control_api` process, its settings, and
users to call it as (the in-process client is tests/support/api_client.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from control_api.demo import services as demo_services
from control_api.passwords import hash_password
from tests.support.fleet import unique
from tests.support.services import Broker, Database, free_port, stop_process

PASSWORD = "correct horse battery"
# Argon2 hashing takes a while; test users share one hash of PASSWORD.
_HASH = hash_password(PASSWORD)


def api_settings(db: Database, broker: Broker, **overrides: Any) -> dict[str, Any]:
    """Settings by name for an API on this database and broker: the demo's, with a
    client id of its own and quick command checks."""
    return demo_services.api_settings(
        db,
        broker,
        **{
            "mqtt_client_id": unique("control-api"),
            "command_check_interval_s": 0.2,
            "command_republish_after_s": 1.0,
            **overrides,
        },
    )


@dataclass
class User:
    id: int
    email: str
    role: str
    tenant_id: int | None
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def create_user(db: Database, role: str, tenant_id: int | None) -> User:
    email = f"{unique(role)}@example.com"
    with db.connect() as conn:
        user_id = conn.execute(
            "INSERT INTO users (email, password_hash, role, tenant_id) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (email, _HASH, role, tenant_id),
        ).fetchone()[0]
    return User(user_id, email, role, tenant_id)


def log_in(client: Any, user: User) -> User:
    response = client.post("/auth/login", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    user.token = response.json()["access_token"]
    return user


def audit_rows(db: Database, after_id: int, **where: Any) -> list[dict[str, Any]]:
    """Audit rows after `after_id` matching every `column=value`."""
    clauses = "".join(f" AND {column} = %s" for column in where)
    with db.connect() as conn:
        cur = conn.execute(
            f"SELECT * FROM audit_log WHERE id > %s{clauses} ORDER BY id",
            (after_id, *where.values()),
        )
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def last_audit_id(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()[0])


class ApiProcess:
    """`python -m control_api` as a real process on a free port."""

    def __init__(self, db: Database, broker: Broker, log_path: Path, **overrides: Any) -> None:
        self.port = free_port()
        self.env = api_env(db, broker, api_port=self.port, **overrides)
        self.log_path = log_path
        self.proc: Any = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiProcess:
        self.proc = demo_services.start_api(self.env, self.port, self.log_path)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        return stop_process(self.proc)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15)


def api_env(db: Database, broker: Broker, **overrides: Any) -> dict[str, str]:
    """The environment of a `python -m control_api` (server or CLI) with these settings."""
    return demo_services.api_env(api_settings(db, broker, **overrides))


def dropped_by_reason(api: Any, metric: str) -> dict[str, float]:
    """A `{reason}` counter of the API's (e.g. `wattfleet_api_acks_dropped_total`) by
    reason, as `/metrics` shows it."""
    families = text_string_to_metric_families(api.get("/metrics").text)
    return {
        s.labels["reason"]: s.value
        for family in families
        for s in family.samples
        if s.name == metric
    }

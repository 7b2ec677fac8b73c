"""The money days' job (`refresh_money_1d`, migrations 0021 and 0023) on a database whose
hourly aggregate has never been materialized: a fresh install, or one without telemetry
yet. TimescaleDB's watermark is then its earliest time (4714 BC); the job prices nothing
and succeeds instead of failing every hour."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import Database, empty_database, migrate

pytestmark = pytest.mark.integration

JOB = "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'refresh_money_1d'"


@pytest.fixture
def fresh_database() -> Iterator[Database]:
    with empty_database("money_job") as db:
        migrate(db)
        yield db


def test_the_job_succeeds_before_anything_is_materialized(fresh_database):
    with fresh_database.connect() as conn:
        [(job,)] = conn.execute(JOB).fetchall()
        conn.execute("CALL run_job(%s)", (job,))
        [(priced_until,)] = conn.execute("SELECT priced_until::text FROM money_1d_state").fetchall()
        assert priced_until == "-infinity"
        assert conn.execute("SELECT count(*) FROM money_1d").fetchone() == (0,)

"""How fast every dashboard's SQL answers at fleet scale (issues 15 and 18).

    .venv/bin/python -m tests.benchmarks.dashboards [--tenants 10] [--sites 1000] \\
        [--days 90] [--runs 5] [--explain 3] [--only 'wattfleet-fleet / Fleet'] \\
        [--reuse] [--data-dir DIR]

1. Fills the database named by WATTFLEET_DATABASE_URL (migrated first; one that already
   holds telemetry is refused unless `--reuse` says it is this benchmark's own fleet from
   an earlier run, which is then topped up to now), else a fresh embedded TimescaleDB
   (PGlite) at a reduced scale: tests/benchmarks/synthetic_fleet.py says what the fleet
   looks like. One sample per site every 5 minutes: the aggregates then hold as many rows
   as with real 5-second data (the raw table 1/60 of it).
2. Materializes telemetry_5m_fixed, then _1h_fixed, then _1d_fixed over the whole range
   (in windows of `--refresh-days`; the newest buckets are left to real-time aggregation, as the
   refresh policies leave them), runs the compression policy's job on telemetry and
   the job pricing local days into money_1d, ANALYZE; prints the times and the sizes
   (bytes per site and per row).
3. Times every SQL query of every dashboard (grafana/dashboards/*/*.json, variables'
   queries included) rendered as Grafana renders it for the last 24 h, 7 d, 30 d and
   90 d, as one tenant's role (the site dashboard on one of its sites, the savings one
   on all of its sites, as "All" does) and as the admin organization's role (one site;
   every site); a query that does not depend on the range is timed once (range "any").
   One warm-up, then `--runs` runs each; prints median and max ms per (dashboard, panel,
   range, role), slowest first, a summary, and EXPLAIN (ANALYZE, BUFFERS) of the
   `--explain` slowest.
Times are wall-clock from sending the query to having every row, on one open connection
per role (Grafana pools its connections); the role is taken with SET LOCAL ROLE and its
own settings (search_path), which is what a login as that role gives the query, so no
role needs a password (the URL's user must be allowed to create roles and to SET ROLE:
the migrations' user).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contract.fields import CONTINUOUS_AGGREGATES
from tests.benchmarks.synthetic_fleet import (
    Fleet,
    Scale,
    Tenant,
    create_fleet,
    fill_telemetry,
    foreign_telemetry,
    load_fleet,
    online,
)
from tests.grafana.test_dashboards import sql_targets
from tests.support.grafana_sql import render
from tests.support.services import REPO, Database, migrate, start_embedded_timescaledb

DASHBOARDS = REPO / "grafana" / "dashboards"
ADMIN_ROLE = "wattfleet_grafana_admin"
TENANT_ROLE = "bench_tenant_grafana"
RANGES = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
ANY_RANGE = "any"
# Aggregates in refresh order, each with the lag its refresh policy leaves to real time.
AGGREGATES = tuple(
    zip(
        CONTINUOUS_AGGREGATES,
        (timedelta(minutes=5), timedelta(hours=1), timedelta(days=1)),
        strict=True,
    )
)
FULL_SCALE = Scale(tenants=10, sites=1000, days=90)
# What the embedded server (PGlite: one single-threaded WASM backend, in memory) fills,
# materializes and times in about 6 minutes on 2 cores: it writes ~5,000 samples/s (this
# is 777k), its process grows to ~2 GB (a 32-bit WASM heap ends at 4), and it runs each
# query several times slower than a native server. 90 days, so the 90-day range is real.
EMBEDDED_SCALE = Scale(tenants=4, sites=30, days=90)
SLOW_MS = 100.0


# -- Grafana's $__interval -------------------------------------------------------------

# rangeutil.roundInterval: (below this many ms, use this many ms).
_ROUNDED_MS = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (150000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)
_UNITS_S = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def grafana_interval(span: timedelta, max_data_points: int, min_interval: str | None) -> str:
    """The `$__interval` Grafana gives a panel `max_data_points` wide (its width in
    pixels unless set) over `span`, not below the panel's minimum interval."""
    raw_ms = span.total_seconds() * 1000 / max_data_points
    ms = next((rounded for below, rounded in _ROUNDED_MS if raw_ms < below), 31536000000)
    if min_interval:
        unit = min_interval[-1]
        ms = max(ms, int(min_interval[:-1]) * dict(_UNITS_S)[unit] * 1000)
    seconds = ms // 1000
    return next(f"{seconds // n}{u}" for u, n in _UNITS_S if seconds % n == 0)


# -- The queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    range: str
    role: str  # "tenant" or "admin"
    sql: str


@dataclass
class Timing:
    query: Query
    ms: list[float] = field(default_factory=list)
    rows: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.ms)


def dashboards() -> list[tuple[str, str, dict[str, Any]]]:
    """(audience, uid, dashboard) of every dashboard with SQL in it."""
    found = []
    for path in sorted(DASHBOARDS.glob("*/*.json")):
        dashboard = json.loads(path.read_text())
        if sql_queries(dashboard):
            found.append((path.parent.name, path.stem, dashboard))
    return found


def sql_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(panel title, raw SQL, the panel's minimum interval) of every SQL query, the
    variables' queries included."""
    intervals = {panel["title"]: panel.get("interval") for panel in dashboard["panels"]}
    return [(title, sql, intervals.get(title)) for title, sql in sql_targets(dashboard)]


def _site(nodes: list[str]) -> str:
    """A site that is online (so its "now" panels have something to show)."""
    return ([n for n in nodes if online(n)] or nodes)[0]


def _variables(dashboard: dict[str, Any], nodes: list[str]) -> dict[str, str | list[str]]:
    values: dict[str, str | list[str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["name"] != "node":
            raise ValueError(f"the benchmark has no values for variable {variable['name']!r}")
        many = variable.get("multi") or variable.get("includeAll")
        values["node"] = list(nodes) if many else _site(nodes)
    return values


def queries(
    fleet: Fleet, tenant: Tenant, now: datetime, ranges: list[str], max_data_points: int
) -> list[Query]:
    """Every SQL query of every dashboard as Grafana sends it, per range and role."""
    found = []
    for audience, uid, dashboard in dashboards():
        roles = {"admin": fleet.nodes}
        if audience == "tenant":
            roles = {"tenant": tenant.nodes, **roles}
        for role, nodes in roles.items():
            variables = _variables(dashboard, nodes)
            for title, sql, min_interval in sql_queries(dashboard):
                rendered = {
                    name: render(
                        sql,
                        now - RANGES[name],
                        now,
                        variables,
                        grafana_interval(RANGES[name], max_data_points, min_interval),
                    )
                    for name in RANGES
                }
                if len(set(rendered.values())) == 1:
                    found.append(Query(uid, title, ANY_RANGE, role, rendered[ranges[0]]))
                    continue
                found += [Query(uid, title, name, role, rendered[name]) for name in ranges]
    return found


# -- Running them as a role ----------------------------------------------------------------


@contextmanager
def runner_as(db: Database, role: str) -> Iterator[Callable[[str], tuple[float, list[Any]]]]:
    """A function that runs a query as `role` and returns (ms, rows). Each query in a
    transaction of its own that takes the role and its settings (rolled back after)."""
    # Never a server-side prepared statement: Grafana sends each query as it is.
    with db.connect(prepare_threshold=None) as conn:
        settings = [
            setting.partition("=")[::2]
            for (setting,) in conn.execute(
                "SELECT unnest(setconfig) FROM pg_db_role_setting s"
                " JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s",
                (role,),
            ).fetchall()
        ]

        def run(sql: str) -> tuple[float, list[Any]]:
            with conn.transaction(force_rollback=True):
                conn.execute(f'SET LOCAL ROLE "{role}"')
                for name, value in settings:
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                began = time.perf_counter()
                rows: list[Any] = conn.execute(sql).fetchall()
                return (time.perf_counter() - began) * 1000, rows

        yield run


def tenant_role(db: Database, tenant: Tenant) -> str:
    with db.connect() as conn:
        conn.execute("SELECT tenant_view.ensure_tenant_role(%s, %s)", (tenant.id, TENANT_ROLE))
    return TENANT_ROLE


def time_queries(
    db: Database,
    tenant: Tenant,
    todo: list[Query],
    runs: int,
    warmups: int = 1,
    progress: Callable[[Timing], None] = lambda _t: None,
) -> list[Timing]:
    roles = {"tenant": tenant_role(db, tenant), "admin": ADMIN_ROLE}
    timings = []
    for who, role in roles.items():
        with runner_as(db, role) as run:
            for query in (q for q in todo if q.role == who):
                for _ in range(warmups):
                    run(query.sql)
                timing = Timing(query)
                for _ in range(runs):
                    ms, rows = run(query.sql)
                    timing.ms.append(ms)
                    timing.rows = len(rows)
                timings.append(timing)
                progress(timing)
    return timings


def explain(db: Database, query: Query) -> str:
    role = TENANT_ROLE if query.role == "tenant" else ADMIN_ROLE
    with runner_as(db, role) as run:
        _, rows = run("EXPLAIN (ANALYZE, BUFFERS) " + query.sql)
    return "\n".join(r[0] for r in rows)


# -- Filling and materializing -----------------------------------------------------------


class RefusedDatabaseError(Exception):
    """The database is not one this benchmark may fill."""


def _telemetry_span(db: Database) -> tuple[datetime, datetime] | None:
    with db.connect() as conn:
        if conn.execute("SELECT to_regclass('telemetry')").fetchone()[0] is None:
            return None
        row = conn.execute("SELECT min(ts), max(ts) FROM telemetry").fetchone()
    return None if row[0] is None else (row[0], row[1])


def prepare_fleet(
    db: Database,
    scale: Scale,
    now: datetime,
    reuse: bool,
    reduced: bool = False,
    say: Callable[[str], None] = print,
) -> tuple[Fleet, datetime, datetime]:
    """Migrates and fills the database up to `now`; returns the fleet and the span of
    samples written this time ([start, now])."""
    span = _telemetry_span(db)
    if span and not reuse:
        raise RefusedDatabaseError(
            "the database already holds telemetry: pass --reuse if it is this benchmark's"
            " fleet from an earlier run, or name an empty database"
        )
    migrate(db)
    fleet = load_fleet(db)
    if span and (not fleet.tenants or foreign_telemetry(db)):
        raise RefusedDatabaseError(
            "the database holds telemetry of tenants that are not the benchmark's"
        )
    if fleet.tenants and not reuse:
        raise RefusedDatabaseError(
            "the database holds the benchmark's tenants already: pass --reuse"
        )
    if span:
        origin, start, gap_days = span[0], span[1] + scale.step, 0
        say(
            f"reusing the fleet: {len(fleet.tenants)} tenants, {len(fleet.nodes)} sites, "
            f"samples since {origin:%Y-%m-%d %H:%M}Z; topping up from {start:%Y-%m-%d %H:%M}Z"
        )
    else:
        why = " (reduced: the embedded server is one single-threaded WASM backend)"
        say(f"scale: {scale.describe()}{why if reduced else ''}")
        origin = start = now - timedelta(days=scale.days)
        gap_days = scale.days
        if not fleet.tenants:
            fleet = create_fleet(db, scale, origin)
    began = time.perf_counter()

    def progress(day: datetime, rows: int) -> None:
        elapsed = time.perf_counter() - began
        print(f"  {day:%Y-%m-%d}: {rows:,} rows, {elapsed:.0f} s", file=sys.stderr)

    rows = fill_telemetry(db, origin, start, now + scale.step, scale.step, gap_days, progress)
    elapsed = time.perf_counter() - began
    say(f"fill: {rows:,} samples in {elapsed:.1f} s ({rows / max(elapsed, 1e-9):,.0f} rows/s)")
    return fleet, start, now


def _floor(t: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (t - epoch) // width * width


def materialize(
    db: Database, start: datetime, end: datetime, window: timedelta, say: Callable[[str], None]
) -> None:
    """Refreshes each aggregate over [start, end) less what its policy leaves to real
    time, in windows; then the compression job on telemetry; then ANALYZE."""
    with db.connect() as conn:
        for view, lag in AGGREGATES:
            began = time.perf_counter()
            stop = _floor(end - lag, lag)
            at = _floor(start, timedelta(days=1))
            while at < stop:
                upto = min(at + window, stop)
                conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, at, upto))
                at = upto
            say(f"refresh {view}: {time.perf_counter() - began:.1f} s")
        [job] = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name ="
            " 'policy_compression' AND hypertable_name = 'telemetry'"
        ).fetchone()
        began = time.perf_counter()
        conn.execute("CALL run_job(%s)", (job,))
        say(f"compression job on telemetry: {time.perf_counter() - began:.1f} s")
        # Prices the completed local days the refresh materialized, as its hourly job does.
        [job] = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'refresh_money_1d'"
        ).fetchone()
        began = time.perf_counter()
        conn.execute("CALL run_job(%s)", (job,))
        say(f"money_1d job: {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        conn.execute("ANALYZE")
        say(f"ANALYZE: {time.perf_counter() - began:.1f} s")


def storage(db: Database, sites: int) -> list[tuple[str, int, int]]:
    """(relation, rows, bytes) of telemetry, each aggregate's materialized rows and the
    priced local days."""
    found = []
    with db.connect() as conn:
        rows, size = conn.execute(
            "SELECT (SELECT count(*) FROM telemetry), hypertable_size('telemetry')"
        ).fetchone()
        found.append(("telemetry", rows, size or 0))
        for view, _ in AGGREGATES:
            [table] = conn.execute(
                "SELECT format('%%I.%%I', materialization_hypertable_schema,"
                " materialization_hypertable_name) FROM"
                " timescaledb_information.continuous_aggregates WHERE view_name = %s",
                (view,),
            ).fetchone()
            rows, size = conn.execute(
                f"SELECT (SELECT count(*) FROM {table}), hypertable_size(%s::regclass)", (table,)
            ).fetchone()
            found.append((view, rows, size or 0))
        rows, size = conn.execute(
            "SELECT (SELECT count(*) FROM money_1d), hypertable_size('money_1d')"
        ).fetchone()
        found.append(("money_1d", rows, size or 0))
        compressed = conn.execute(
            "SELECT number_compressed_chunks, total_chunks, before_compression_total_bytes,"
            " after_compression_total_bytes FROM hypertable_compression_stats('telemetry')"
        ).fetchone()
    print("storage (materialized rows; bytes with indexes):")
    for name, rows, size in found:
        per_row = size / rows if rows else 0
        print(
            f"  {name:<13} {rows:>12,} rows {size / 2**20:>10,.1f} MiB"
            f" {size / sites / 2**20:>8,.2f} MiB/site {per_row:>7,.0f} B/row"
        )
    if compressed and compressed[2]:
        print(
            f"  telemetry compression: {compressed[0]}/{compressed[1]} chunks,"
            f" {compressed[2] / max(compressed[3], 1):.1f}x"
        )
    return found


# -- Reporting -------------------------------------------------------------------------------


def report(timings: list[Timing]) -> None:
    ordered = sorted(timings, key=lambda t: t.median, reverse=True)
    print(
        f"\n{'dashboard':<18} {'panel':<38} {'range':>5} {'role':<6}"
        f" {'median ms':>10} {'max ms':>9} {'rows':>6}"
    )
    for t in ordered:
        q = t.query
        print(
            f"{q.dashboard:<18} {q.panel[:38]:<38} {q.range:>5} {q.role:<6}"
            f" {t.median:>10.1f} {max(t.ms):>9.1f} {t.rows:>6}"
        )
    slow = [t for t in ordered if t.median > SLOW_MS]
    print(f"\nover {SLOW_MS:.0f} ms median: {len(slow)} of {len(timings)}")
    for t in slow:
        q = t.query
        print(f"  {q.dashboard} / {q.panel} / {q.range} / {q.role}: {t.median:.0f} ms")
    for label, pick in (
        ("admin fleet overview", lambda q: q.dashboard == "wattfleet-fleet"),
        ("Sites table", lambda q: q.panel == "Sites"),
    ):
        chosen = [t for t in ordered if pick(t.query)]
        if not chosen:
            continue
        total = sum(t.median for t in chosen)
        print(
            f"{label}: every query {total:.0f} ms in sum (median each); slowest: "
            + ", ".join(f"{t.query.panel} ({t.query.role}) {t.median:.0f} ms" for t in chosen[:3])
        )


def markdown(timings: list[Timing]) -> str:
    """Medians (ms) as a Markdown table: a row per panel, a column per role and range
    ("(any)": a query that does not depend on the range)."""
    columns = [(role, r) for role in ("tenant", "admin") for r in RANGES]
    medians = {(t.query.dashboard, t.query.panel, t.query.role, t.query.range): t.median
               for t in timings}  # fmt: skip
    panels = sorted(
        dict.fromkeys((t.query.dashboard, t.query.panel) for t in timings), key=lambda p: p[0]
    )
    lines = [
        "| dashboard | panel | " + " | ".join(f"{role} {r}" for role, r in columns) + " |",
        "| --- | --- |" + " ---: |" * len(columns),
    ]
    for dashboard, panel in panels:
        cells = []
        for role, r in columns:
            value = medians.get((dashboard, panel, role, r))
            if value is None and r == next(iter(RANGES)):
                value = medians.get((dashboard, panel, role, ANY_RANGE))
                cells.append("" if value is None else f"{value:.0f} (any)")
                continue
            cells.append("" if value is None else f"{value:.0f}")
        lines.append(
            f"| {dashboard.removeprefix('wattfleet-')} | {panel} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _scale(args: argparse.Namespace, embedded: bool) -> Scale:
    base = EMBEDDED_SCALE if embedded else FULL_SCALE
    return Scale(
        tenants=args.tenants or base.tenants,
        sites=args.sites or base.sites,
        days=args.days or base.days,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tenants",
        type=int,
        help=f"default {FULL_SCALE.tenants} ({EMBEDDED_SCALE.tenants} embedded)",
    )
    parser.add_argument(
        "--sites", type=int, help=f"default {FULL_SCALE.sites} ({EMBEDDED_SCALE.sites} embedded)"
    )
    parser.add_argument(
        "--days", type=int, help=f"default {FULL_SCALE.days} ({EMBEDDED_SCALE.days} embedded)"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up")
    parser.add_argument("--explain", type=int, default=3, help="EXPLAIN the N slowest")
    parser.add_argument("--ranges", default=",".join(RANGES), help="of " + ",".join(RANGES))
    parser.add_argument(
        "--max-data-points",
        type=int,
        default=1000,
        help="a time series panel's width in pixels: sets $__interval",
    )
    parser.add_argument(
        "--refresh-days",
        type=int,
        default=7,
        help="refresh the aggregates in windows of this many days",
    )
    parser.add_argument(
        "--only",
        action="append",
        help="time only the queries whose 'dashboard / panel' contains this (repeatable)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the embedded server's database there (to --reuse it in a later run)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="the database holds this benchmark's fleet: top it up, time it",
    )
    args = parser.parse_args(argv)
    ranges = args.ranges.split(",")
    unknown = set(ranges) - set(RANGES)
    if unknown:
        parser.error(f"unknown ranges {sorted(unknown)}")

    url = os.environ.get("WATTFLEET_DATABASE_URL")
    if url:
        db = Database(url, embedded=False)
    else:
        db = start_embedded_timescaledb(data_dir=args.data_dir)
    scale = _scale(args, db.embedded)
    try:
        print(f"database: {'embedded TimescaleDB (PGlite)' if db.embedded else db.url}")
        now = _floor(datetime.now(UTC), scale.step)
        try:
            fleet, start, end = prepare_fleet(db, scale, now, args.reuse, db.embedded)
        except RefusedDatabaseError as exc:
            sys.exit(f"refused: {exc}")
        materialize(db, start, end, timedelta(days=args.refresh_days), print)
        storage(db, len(fleet.nodes))
        tenant = fleet.tenants[0]
        todo = [
            q
            for q in queries(
                fleet,
                tenant,
                datetime.now(UTC).replace(microsecond=0),
                ranges,
                args.max_data_points,
            )
            if not args.only or any(part in f"{q.dashboard} / {q.panel}" for part in args.only)
        ]
        print(
            f"timing {len(todo)} queries ({args.runs} runs after a warm-up) as tenant"
            f" {tenant.slug} ({len(tenant.nodes)} sites) and as {ADMIN_ROLE}"
            f" ({len(fleet.nodes)} sites)"
        )
        began = time.perf_counter()
        timings = time_queries(
            db,
            tenant,
            todo,
            args.runs,
            progress=lambda t: print(
                f"  {t.query.dashboard} / {t.query.panel} /"
                f" {t.query.range} / {t.query.role}: {t.median:.1f} ms",
                file=sys.stderr,
            ),
        )
        print(f"timed in {time.perf_counter() - began:.0f} s")
        report(timings)
        print("\nmedians (ms), as docs/benchmarks.md shows them:\n" + markdown(timings))
        for timing in sorted(timings, key=lambda t: t.median, reverse=True)[: args.explain]:
            q = timing.query
            print(
                f"\nEXPLAIN (ANALYZE, BUFFERS) {q.dashboard} / {q.panel} / {q.range} /"
                f" {q.role}:\n{q.sql}\n{explain(db, q)}"
            )
    finally:
        db.stop()


if __name__ == "__main__":
    main()

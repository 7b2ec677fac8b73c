"""Storage per site (issue 18): what a site's realistic 5-second telemetry and its
aggregates take, compressed and not, and the steady state the retention gives.

    .venv/bin/python -m tests.benchmarks.storage [--sites 4] [--days 9] \\
        [--sample-days 2] [--reuse] [--data-dir DIR]

1. Fills the database named by WATTFLEET_DATABASE_URL (migrated first; one that already
   holds telemetry is refused unless `--reuse` says it is this benchmark's own from an
   earlier run, which is then measured again as it is), else a fresh embedded
   TimescaleDB (PGlite): `--sites` sites of one tenant, `--days` days up to now of
   5-second samples as the collector writes them (tests/benchmarks/five_second_data.py),
   by COPY, a day of every site per statement.
2. Materializes the aggregates (telemetry_5m_fixed, _1h_fixed, _1d_fixed), runs the
   compression policy's job on telemetry (it compresses what is older than its
   compress_after), ANALYZE.
3. Raw telemetry: bytes per row of the full days, uncompressed (heap, TOAST and indexes:
   what a chunk takes on disk) and compressed as they are in the table. Then each
   candidate (CANDIDATES) on a copy of `--sample-days` full days: a hypertable of the
   same columns and indexes, compressed chunk by chunk; its bytes per row before and
   after, and the pages (shared buffers hit or read) a site's day and a seq lookup read.
   The candidates: the fixed-point columns as the floats they stood for before migration
   0026 (FLOATS), as integers in 1-day chunks, and as migration 0026 has them (CHOSEN).
4. Aggregates: each one's materialized rows, bytes per row uncompressed, and compressed
   (segmentby node_id, orderby bucket) on a copy whose rows are repeated along time to
   fill one whole chunk of the aggregate's interval, so batches are as full as in a
   steady state (a year of daily rows, 30 days of hourly ones, 10 of 5-minute ones);
   likewise with their integers stored as the doubles they stand for (before 0026).
5. The steady state per site, computed: rows per site and day times bytes per row, over
   the retention of each table, the part younger than its compress_after uncompressed
   (nominal), and at worst (compress_after + one chunk + the job's schedule interval
   uncompressed; the retention job likewise late); hourly and daily for one year each.
   Figures are for the settings of migrations 0001 and 0016 (BEFORE) and of 0020
   (AS_0020), both with floats, and for those in the database.
Also printed: where a compressed row's bytes go, column by column, for FLOATS and CHOSEN.
Bytes per row include each chunk's fixed cost (its indexes' first pages, an empty
compressed chunk's relations): it is shared by every site in a chunk, so a fleet of
hundreds of sites pays less per site than these few do.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.telemetry_row import TELEMETRY_COLUMNS
from contract.fields import CONTINUOUS_AGGREGATES, TELEMETRY
from tests.benchmarks.dashboards import RefusedDatabaseError, _floor, _telemetry_span, materialize
from tests.benchmarks.five_second_data import Site, samples
from tests.benchmarks.synthetic_fleet import Scale, create_fleet, foreign_telemetry, load_fleet
from tests.support.services import Database, migrate, start_embedded_timescaledb
from timescale.earlier_migration import load

DAY = timedelta(days=1)
SCRATCH = "storage_bench_candidate"
MIB = 2**20


@dataclass(frozen=True)
class Compression:
    """How one hypertable is chunked and compressed, and what is kept."""

    chunk: timedelta
    compress_after: timedelta | None
    keep: timedelta | None  # None: for good (a year is counted)
    schedule: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class Candidate:
    name: str
    segmentby: str
    orderby: str
    chunk: timedelta = DAY
    # Columns stored as another type: column -> (type, the value from telemetry's row).
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)


# Migration 0026 stores the fixed-point fields as integers (contract/fields.py FixedPoint);
# before it they were stored as sent, as floats: measured again by retyping the copy's
# integer columns back to the floats they stand for. (A float whose mantissa is full,
# such as 5.004 s or 3.459 Wh, compresses by Gorilla to ~7 bytes; the same value as the
# integer of its resolution compresses by delta-of-delta to 1-2.)
AS_SENT = {
    f.stored.column: ("double precision", f"{f.stored.column}::float8 / {f.stored.scale}")
    for f in TELEMETRY
    if f.stored
}
SIX_HOURS = timedelta(hours=6)
FLOATS = Candidate(
    "floats as sent, 1-day chunks (migration 0020)",
    "node_id",
    "ts DESC, seq DESC",
    retyped=AS_SENT,
)
INTEGERS_1D = Candidate("fixed-point integers, 1-day chunks", "node_id", "ts DESC, seq DESC")
# What migration 0026 chose.
CHOSEN = replace(
    INTEGERS_1D, name="fixed-point integers, 6-hour chunks (migration 0026)", chunk=SIX_HOURS
)
CANDIDATES = (FLOATS, INTEGERS_1D, CHOSEN)
AGGREGATES = tuple(
    zip(CONTINUOUS_AGGREGATES, (timedelta(minutes=5), timedelta(hours=1), DAY), strict=True)
)
# Rows kept for good are counted for this long.
FOREVER = timedelta(days=365)


# -- Filling ---------------------------------------------------------------------------


def fill(
    db: Database, sites: list[Site], start: datetime, end: datetime, say: Callable[[str], None]
) -> int:
    """Every site's 5-second samples over [start, end), a day of all sites per COPY
    (their rows interleaved in time order, as they arrive)."""
    columns = ", ".join(name for name, _ in TELEMETRY_COLUMNS)
    types = [pg_type for _, pg_type in TELEMETRY_COLUMNS]
    streams = [samples(site, start, end) for site in sites]
    pending: list[list[Any] | None] = [next(s, None) for s in streams]
    rows = 0
    began = time.perf_counter()
    with db.connect() as conn:
        day = start
        while day < end:
            upto = min(day + DAY, end)
            batch: list[list[Any]] = []
            for i, stream in enumerate(streams):
                row = pending[i]
                while row is not None and row[0] < upto:
                    batch.append(row)
                    row = next(stream, None)
                pending[i] = row
            batch.sort(key=lambda r: r[0])
            with conn.cursor().copy(
                f"COPY telemetry ({columns}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(types)
                for row in batch:
                    copy.write_row(row)
            rows += len(batch)
            print(
                f"  {day:%Y-%m-%d}: {rows:,} rows, {time.perf_counter() - began:.0f} s",
                file=sys.stderr,
            )
            day = upto
    elapsed = time.perf_counter() - began
    say(f"fill: {rows:,} samples in {elapsed:.1f} s ({rows / max(elapsed, 1e-9):,.0f} rows/s)")
    return rows


def prepare(
    db: Database, site_count: int, days: int, now: datetime, reuse: bool, say: Callable[[str], None]
) -> tuple[list[Site], datetime, datetime]:
    """Migrates and fills the database; returns the sites and the span of samples."""
    span = _telemetry_span(db)
    if span and not reuse:
        raise RefusedDatabaseError(
            "the database already holds telemetry: pass --reuse if it is this benchmark's"
            " from an earlier run, or name an empty database"
        )
    migrate(db)
    fleet = load_fleet(db)
    if span and (not fleet.tenants or foreign_telemetry(db)):
        raise RefusedDatabaseError(
            "the database holds telemetry of tenants that are not the benchmark's"
        )
    if fleet.tenants and not span:
        raise RefusedDatabaseError("the database holds the benchmark's tenants but no telemetry")
    if not span:
        start = _floor(now, DAY) - days * DAY
        fleet = create_fleet(db, Scale(tenants=1, sites=site_count, days=days), start)
    tenant = fleet.tenants[0]
    sites = [Site(node, tenant.id, k) for k, node in enumerate(tenant.nodes)]
    if span:
        say(f"reusing {len(sites)} sites' samples from {span[0]:%Y-%m-%d %H:%M}Z")
        # The fill starts at midnight (its first sample a poll later) and ends at a run's now.
        return sites, _floor(span[0], DAY), _floor(span[1], timedelta(minutes=5))
    say(f"{len(sites)} sites, {days} days of 5-second samples up to now")
    fill(db, sites, start, now, say)
    return sites, start, now


# -- Measuring ---------------------------------------------------------------------------


def _scalar(conn: Any, sql: str, params: Any = None) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def _size(conn: Any, table: str) -> int:
    return int(_scalar(conn, "SELECT hypertable_size(%s::regclass)", (table,)) or 0)


@dataclass
class Measured:
    rows: int
    before: int  # bytes uncompressed
    after: int  # bytes compressed
    pages: dict[str, int]
    columns: dict[str, int] = field(default_factory=dict)

    @property
    def before_per_row(self) -> float:
        return self.before / self.rows

    @property
    def after_per_row(self) -> float:
        return self.after / self.rows

    @property
    def ratio(self) -> float:
        return self.before / max(self.after, 1)


def _pages(conn: Any, sql: str, params: Any) -> int:
    """Shared buffers hit and read by the query (EXPLAIN ANALYZE)."""
    [[plan]] = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


@contextmanager
def scratch(
    conn: Any,
    like: str,
    time_column: str,
    chunk: timedelta,
    retyped: dict[str, tuple[str, str]] | None = None,
) -> Iterator[str]:
    """A hypertable of `like`'s columns (some `retyped`) and indexes, dropped after."""
    conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
    conn.execute(f"CREATE TABLE {SCRATCH} (LIKE {like} INCLUDING DEFAULTS INCLUDING INDEXES)")
    for column, (pg_type, _) in (retyped or {}).items():
        conn.execute(f"ALTER TABLE {SCRATCH} ALTER COLUMN {column} TYPE {pg_type}")
    conn.execute(
        "SELECT create_hypertable(%s, by_range(%s, %s::interval), create_default_indexes => false)",
        (SCRATCH, time_column, chunk),
    )
    try:
        yield SCRATCH
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")


def compress_all(conn: Any, table: str, segmentby: str, orderby: str) -> tuple[int, int]:
    """(bytes before, after) compressing every chunk of `table`."""
    conn.execute(
        f"ALTER TABLE {table} SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = %s, timescaledb.compress_orderby = %s)"
        .replace("%s", "'{}'").format(segmentby, orderby)
    )  # fmt: skip
    conn.execute(f"VACUUM ANALYZE {table}")  # the size as it settles, free space mapped
    before = _size(conn, table)
    conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}') c")
    conn.execute(f"VACUUM ANALYZE {table}")
    return before, _size(conn, table)


def measure_candidate(
    conn: Any, candidate: Candidate, first: datetime, last: datetime, node: str
) -> Measured:
    """The candidate on a copy of telemetry's full days [first, last)."""
    with scratch(conn, "telemetry", "ts", candidate.chunk, candidate.retyped) as table:
        values = ", ".join(
            candidate.retyped[name][1] if name in candidate.retyped else name
            for name, _ in TELEMETRY_COLUMNS
        )
        rows = conn.execute(
            f"INSERT INTO {table} ({', '.join(name for name, _ in TELEMETRY_COLUMNS)})"
            f" SELECT {values} FROM telemetry WHERE ts >= %s AND ts < %s ORDER BY ts",
            (first, last),
        ).rowcount
        seq = _scalar(conn, f"SELECT min(seq) FROM {table} WHERE node_id = %s", (node,))
        reads = {
            "a site day": (
                f"SELECT ts, solar_power_w, load_power_w, grid_power_w, battery_power_w,"
                f" soc_percent FROM {table} WHERE node_id = %s AND ts >= %s AND ts < %s"
                " ORDER BY ts",
                (node, first, first + DAY),
            ),
            "100 seqs": (
                f"SELECT seq, ts FROM {table} WHERE node_id = %s"
                " AND seq BETWEEN %s AND %s AND ts >= %s",
                (node, seq + 5000, seq + 5099, first),
            ),
        }
        conn.execute(f"VACUUM ANALYZE {table}")
        pages = {f"{name} uncompressed": _pages(conn, *read) for name, read in reads.items()}
        before, after = compress_all(conn, table, candidate.segmentby, candidate.orderby)
        pages |= {name: _pages(conn, *read) for name, read in reads.items()}
        columns = column_bytes(conn, table)
    return Measured(rows, before, after, pages, columns)


def column_bytes(conn: Any, table: str) -> dict[str, int]:
    """Bytes each column of the compressed chunks of `table` takes (pg_column_size:
    compressed, TOAST included), metadata columns included."""
    found: dict[str, int] = {}
    for (compressed,) in conn.execute(
        "SELECT format('%%I.%%I', c2.schema_name, c2.table_name)"
        " FROM _timescaledb_catalog.chunk c1 JOIN _timescaledb_catalog.chunk c2"
        " ON c2.id = c1.compressed_chunk_id JOIN _timescaledb_catalog.hypertable h"
        " ON h.id = c1.hypertable_id WHERE h.table_name = %s",
        (table,),
    ).fetchall():
        names = [c.name for c in conn.execute(f"SELECT * FROM {compressed} LIMIT 0").description]
        sums = conn.execute(
            "SELECT "
            + ", ".join(f"coalesce(sum(pg_column_size({n})), 0)" for n in names)
            + f" FROM {compressed}"
        ).fetchone()
        for name, size in zip(names, sums, strict=True):
            found[name] = found.get(name, 0) + int(size)
    return found


def _materialization(conn: Any, view: str) -> str:
    return str(
        _scalar(
            conn,
            "SELECT format('%%I.%%I', materialization_hypertable_schema,"
            " materialization_hypertable_name) FROM"
            " timescaledb_information.continuous_aggregates WHERE view_name = %s",
            (view,),
        )
    )


def _chunk_interval(conn: Any, table: str) -> timedelta:
    schema, _, name = table.rpartition(".")
    seconds = _scalar(
        conn,
        "SELECT extract(epoch FROM time_interval) FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = %s AND hypertable_name = %s",
        (schema or "public", name),
    )
    return timedelta(seconds=float(seconds))


# The integer aggregates' value columns as the double precision ones they stand for, as
# migration 0026 converts them (mWh for kWh, ms for seconds, 0.1 % for SOC, whole W).
AS_DOUBLES = {
    column.name: ("double precision", f"{column.name}::float8 / {column.scale}")
    for column in load("0026_fixed_point_telemetry.py").COLUMNS
}


def measure_aggregate(
    conn: Any,
    view: str,
    width: timedelta,
    first: datetime,
    last: datetime,
    sites: int,
    as_doubles: bool = False,
) -> tuple[Measured, float]:
    """(bytes uncompressed and compressed, rows per site and day) of the aggregate's
    rows over the full days [first, last), repeated along time to fill one chunk of its
    interval from that chunk's start; `as_doubles`: its integer value columns stored as
    the double precision ones they stand for (as before migration 0026)."""
    table = _materialization(conn, view)
    chunk = _chunk_interval(conn, table)
    span = last - first
    rows_per_site_day = DAY / width
    retyped = AS_DOUBLES if as_doubles else {}
    with scratch(conn, table, "bucket", chunk, retyped) as copy:
        others = [c.name for c in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]
        others.remove("bucket")
        values = ", ".join(retyped[c][1] if c in retyped else c for c in others)
        origin = _floor(first, chunk)
        for k in range(math.ceil(chunk / span)):
            conn.execute(
                f"INSERT INTO {copy} (bucket, {', '.join(others)})"
                f" SELECT bucket + %s, {values} FROM {table}"
                " WHERE bucket >= %s AND bucket < %s AND bucket + %s < %s",
                (origin - first + k * span, first, last, origin - first + k * span, origin + chunk),
            )
        rows = _scalar(conn, f"SELECT count(*) FROM {copy}")
        before, after = compress_all(conn, copy, "node_id", "bucket")
    expected = sites * rows_per_site_day * chunk.total_seconds() / 86400
    assert rows == round(expected), (view, rows, expected)
    return Measured(rows, before, after, {}), rows_per_site_day


def measure_table(conn: Any, first: datetime, last: datetime) -> tuple[Measured, Measured]:
    """telemetry's full-day chunks within [first, last) as they are: (the uncompressed
    ones, the compressed ones); `before` of the compressed ones is their size before
    compression (TimescaleDB's statistics), `pages` empty."""
    found = {False: [0, 0, 0], True: [0, 0, 0]}  # compressed: [rows, before, after]
    for chunk, start, end, compressed in conn.execute(
        "SELECT format('%%I.%%I', chunk_schema, chunk_name), range_start, range_end,"
        " is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry'"
        " AND range_start >= %s AND range_end <= %s",
        (first, last),
    ).fetchall():
        rows = _scalar(
            conn, "SELECT count(*) FROM telemetry WHERE ts >= %s AND ts < %s", (start, end)
        )
        if compressed:
            before, after = conn.execute(
                "SELECT before_compression_total_bytes, after_compression_total_bytes"
                " FROM chunk_compression_stats('telemetry') WHERE format('%%I.%%I',"
                " chunk_schema, chunk_name) = %s",
                (chunk,),
            ).fetchone()
            after += _scalar(conn, "SELECT pg_total_relation_size(%s::regclass)", (chunk,))
        else:
            before = after = _scalar(conn, "SELECT pg_total_relation_size(%s::regclass)", (chunk,))
        totals = found[bool(compressed)]
        totals[0] += rows
        totals[1] += before
        totals[2] += after
    plain, compressed = (
        Measured(rows, before, after, {}) for rows, before, after in (found[False], found[True])
    )
    return plain, compressed


# -- The steady state ------------------------------------------------------------------


def _days(t: timedelta) -> float:
    return t / DAY


def steady_state(
    per_site_day: float, bytes_raw: float, bytes_compressed: float, policy: Compression
) -> tuple[float, float]:
    """(nominal, worst) bytes per site: `per_site_day` rows a day, the newest
    compress_after of the kept time at `bytes_raw` a row, the rest at
    `bytes_compressed`. Worst: just before the jobs run, a chunk and a schedule interval
    later than nominal for compression, a chunk and a day (the retention job's interval)
    for retention."""
    keep = policy.keep or FOREVER
    after = keep if policy.compress_after is None else min(policy.compress_after, keep)
    late = policy.chunk + policy.schedule
    worst_keep = keep + (policy.chunk + DAY if policy.keep else timedelta(0))
    worst_after = min(after + late, worst_keep) if policy.compress_after else worst_keep

    def total(kept: timedelta, raw: timedelta) -> float:
        return per_site_day * (_days(raw) * bytes_raw + _days(kept - raw) * bytes_compressed)

    return total(keep, after), total(worst_keep, worst_after)


def policies(conn: Any) -> dict[str, Compression]:
    """Each table's chunk interval, compress_after, retention and compression schedule
    as the database has them."""
    found = {}
    for name in ("telemetry", *(view for view, _ in AGGREGATES)):
        table = name if name == "telemetry" else _materialization(conn, name)
        # The jobs view names an aggregate's jobs by the view's name.
        jobs = {
            proc: (config, schedule)
            for proc, config, schedule in conn.execute(
                "SELECT proc_name, config, schedule_interval FROM timescaledb_information.jobs"
                " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
                (name,),
            ).fetchall()
        }

        def interval(proc: str, key: str, jobs: dict[str, Any] = jobs) -> timedelta | None:
            if proc not in jobs:
                return None
            return timedelta(
                seconds=float(
                    _scalar(conn, "SELECT extract(epoch FROM %s::interval)", (jobs[proc][0][key],))
                )
            )

        found[name] = Compression(
            chunk=_chunk_interval(conn, table),
            compress_after=interval("policy_compression", "compress_after"),
            keep=interval("policy_retention", "drop_after"),
            schedule=jobs.get("policy_compression", (None, timedelta(hours=12)))[1],
        )
    return found


# What migrations 0001 and 0016 set, before issue 18's storage part (migration 0020).
FIVE_MINUTES, HOURLY, DAILY = CONTINUOUS_AGGREGATES
BEFORE = {
    "telemetry": Compression(DAY, timedelta(days=7), timedelta(days=30)),
    FIVE_MINUTES: Compression(timedelta(days=10), timedelta(days=14), timedelta(days=400)),
    HOURLY: Compression(timedelta(days=30), timedelta(days=30), None),
    DAILY: Compression(timedelta(days=365), None, None),
}
# Migration 0020: raw telemetry compressed after a day (its chunks a day, the schedule
# hourly).
AS_0020 = {
    **BEFORE,
    "telemetry": Compression(DAY, DAY, timedelta(days=30), timedelta(hours=1)),
}


@dataclass
class Figures:
    """Bytes per row (uncompressed, compressed) and rows per site and day, per table."""

    rows_per_site_day: dict[str, float]
    raw: dict[str, float]
    compressed: dict[str, float]


def report_steady_state(label: str, figures: Figures, settings: dict[str, Compression]) -> float:
    """Prints the steady state per site under `settings`; returns the nominal total."""
    print(f"\nsteady state per site, {label}:")
    print(
        f"  {'table':<13} {'chunk':>7} {'compress after':>15} {'kept':>9}"
        f" {'nominal MiB':>12} {'worst MiB':>10}"
    )
    nominal_total = worst_total = 0.0
    for name, policy in settings.items():
        nominal, worst = steady_state(
            figures.rows_per_site_day[name], figures.raw[name], figures.compressed[name], policy
        )
        nominal_total += nominal
        worst_total += worst
        after = "never" if policy.compress_after is None else f"{_days(policy.compress_after):g} d"
        kept = f"{_days(policy.keep):g} d" if policy.keep else "1 year"
        print(
            f"  {name:<13} {_days(policy.chunk):>5g} d {after:>15} {kept:>9}"
            f" {nominal / MIB:>12.2f} {worst / MIB:>10.2f}"
        )
    print(f"  {'total':<48} {nominal_total / MIB:>12.2f} {worst_total / MIB:>10.2f}")
    return nominal_total


def run(
    db: Database, args: argparse.Namespace, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Fills, measures and prints; returns the figures (for the smoke test)."""
    now = _floor(datetime.now(UTC), timedelta(minutes=5))
    sites, start, end = prepare(db, args.sites, args.days, now, args.reuse, say)
    began = time.perf_counter()
    materialize(db, start, end, timedelta(days=7), say)
    say(f"materialized and compressed in {time.perf_counter() - began:.1f} s")
    first = start
    last = _floor(end, DAY) - DAY  # the daily aggregate holds the days before yesterday
    node = sites[0].node_id
    results: dict[str, Any] = {"candidates": {}, "aggregates": {}, "aggregates as doubles": {}}
    as_doubles: dict[str, Measured] = results["aggregates as doubles"]
    with db.connect() as conn:
        current = policies(conn)
        plain, compressed = measure_table(conn, first, _floor(end, DAY))
        per_site_day = (plain.rows + compressed.rows) / len(sites) / _days(_floor(end, DAY) - first)
        print(f"\ntelemetry: {per_site_day:,.0f} rows per site and day")
        if plain.rows:
            print(f"  uncompressed chunks: {plain.rows:,} rows, {plain.before_per_row:.1f} B/row")
        if compressed.rows:
            print(
                f"  compressed chunks (the policy): {compressed.rows:,} rows,"
                f" {compressed.before_per_row:.1f} -> {compressed.after_per_row:.1f} B/row"
                f" ({compressed.ratio:.1f}x)"
            )
        results["table"] = (plain, compressed)
        sample_last = min(first + args.sample_days * DAY, last)
        print(
            f"\ncandidates on {_days(sample_last - first):g} full days"
            f" ({sample_last - first} from {first:%Y-%m-%d}):"
        )
        print(
            f"  {'setting':<56} {'B/row':>6} {'compressed':>10} {'ratio':>6}"
            f" {'pages: a site day':>18} {'100 seqs':>9}"
        )
        for candidate in CANDIDATES:
            m = measure_candidate(conn, candidate, first, sample_last, node)
            results["candidates"][candidate.name] = m
            print(
                f"  {candidate.name:<56} {m.before_per_row:>6.1f} {m.after_per_row:>10.1f}"
                f" {m.ratio:>5.1f}x {m.pages['a site day']:>18} {m.pages['100 seqs']:>9}"
            )
        m = results["candidates"][CHOSEN.name]
        print(
            f"  {'(uncompressed, as inserted)':<56} {'':>6} {'':>10} {'':>6}"
            f" {m.pages['a site day uncompressed']:>18} {m.pages['100 seqs uncompressed']:>9}"
        )
        for candidate in (FLOATS, CHOSEN):
            measured = results["candidates"][candidate.name]
            print(f"\nwhere the bytes go, compressed ({candidate.name}), B/row:")
            for name, size in sorted(measured.columns.items(), key=lambda c: -c[1]):
                if size / measured.rows >= 0.05:
                    print(f"  {name:<30} {size / measured.rows:>6.2f}")
            data = sum(measured.columns.values()) / measured.rows
            print(f"  {'(all columns)':<30} {data:>6.2f} of {measured.after_per_row:.2f}")
        print(
            "\naggregates (compressed: segmentby node_id, orderby bucket, one full chunk;"
            " as doubles: compressed with its integers stored as the doubles they stand for,"
            " as before migration 0026):"
        )
        print(
            f"  {'aggregate':<19} {'rows/site-day':>13} {'B/row':>6} {'compressed':>10}"
            f" {'ratio':>6} {'kB/site-day':>12} {'compressed':>10} {'as doubles':>11}"
        )
        figures = Figures({"telemetry": per_site_day}, {}, {})
        for view, width in AGGREGATES:
            m, rows_per_day = measure_aggregate(conn, view, width, first, last, len(sites))
            results["aggregates"][view] = m
            as_doubles[view] = measure_aggregate(
                conn, view, width, first, last, len(sites), as_doubles=True
            )[0]
            figures.rows_per_site_day[view] = rows_per_day
            figures.raw[view] = m.before_per_row
            figures.compressed[view] = m.after_per_row
            print(
                f"  {view:<19} {rows_per_day:>13g} {m.before_per_row:>6.1f}"
                f" {m.after_per_row:>10.1f} {m.ratio:>5.1f}x"
                f" {rows_per_day * m.before_per_row / 1000:>12.2f}"
                f" {rows_per_day * m.after_per_row / 1000:>10.2f}"
                f" {rows_per_day * as_doubles[view].after_per_row / 1000:>11.2f}"
            )
    chosen = results["candidates"][CHOSEN.name]
    figures.raw["telemetry"] = plain.before_per_row if plain.rows else chosen.before_per_row
    figures.compressed["telemetry"] = (
        compressed.after_per_row if compressed.rows else chosen.after_per_row
    )
    floats = results["candidates"][FLOATS.name]
    before = Figures(
        figures.rows_per_site_day,
        {"telemetry": floats.before_per_row} | {v: m.before_per_row for v, m in as_doubles.items()},
        {"telemetry": floats.after_per_row} | {v: m.after_per_row for v, m in as_doubles.items()},
    )
    results["before"] = report_steady_state(
        "as migrations 0001 and 0016 set it (floats)", before, BEFORE
    )
    results["0020"] = report_steady_state(
        "as migration 0020 set it (floats, raw compressed after a day)", before, AS_0020
    )
    results["now"] = report_steady_state("as the database is set now", figures, current)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4, help="sites of one tenant")
    parser.add_argument("--days", type=int, default=9, help="days of samples up to now")
    parser.add_argument(
        "--sample-days", type=int, default=2, help="full days each candidate copies"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keep the embedded server's database there (to --reuse it)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="the database holds this benchmark's samples"
    )
    args = parser.parse_args(argv)
    url = os.environ.get("WATTFLEET_DATABASE_URL")
    db = (
        Database(url, embedded=False) if url else start_embedded_timescaledb(data_dir=args.data_dir)
    )
    try:
        print(f"database: {'embedded TimescaleDB (PGlite)' if db.embedded else db.url}")
        with db.connect() as conn:
            print(
                "  "
                + _scalar(conn, "SELECT version()").split(" on ")[0]
                + ", TimescaleDB "
                + str(
                    _scalar(
                        conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                    )
                )
            )
        try:
            run(db, args)
        except RefusedDatabaseError as exc:
            sys.exit(f"refused: {exc}")
    finally:
        db.stop()


if __name__ == "__main__":
    main()

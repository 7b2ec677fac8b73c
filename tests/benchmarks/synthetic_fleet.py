"""A synthetic fleet for the dashboard benchmark: tenants in real time zones with
time-of-use tariffs (some sites with their own), and telemetry with realistic daily
shapes, generated inside the database (INSERT ... SELECT over generate_series, one
statement per day of data) so a fleet of 1,000 sites x 90 days needs no client loop.

Every tenant's slug starts with `bench-` and every node id with `bench-`: that is how a
later run recognizes the fleet as its own (`load_fleet`, `foreign_telemetry`).

A site's day, in its local time (h = local hour):
- PV: a bell from 06:00 to 20:00, its peak the site's size (3-8 kW) times a cloud
  factor drawn per site and day;
- load: a base, a morning bump (06:30-08:30) and the evening peak (17:00-21:00);
- battery (+ discharging): charging from PV 10:00-14:00, discharging 17:00-21:00, its
  state of charge following (20 % to 80 %);
- grid (+ import) balances: load - PV - battery.
Each sample carries the energy part the agent counts from power (tests/support/tariffs.py
`sample_row`): energies are powers held over `covered_s`. Each site has one 2-hour gap:
the sample after it covers nothing (its interval is the gap), as the agent reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from contract.tariff import TariffVersion
from tests.support.services import Database
from tests.support.tariffs import flat_tariff, insert_tariff

PREFIX = "bench-"
# (zone, currency, off-peak import price per kWh); tenants take them in turn.
ZONES = (
    ("Europe/Warsaw", "PLN", 0.62),
    ("Europe/Berlin", "EUR", 0.28),
    ("America/New_York", "USD", 0.17),
    ("Europe/London", "GBP", 0.24),
)
GAP = timedelta(hours=2)
# One site in OWN_TARIFF_EVERY has a tariff of its own (from a third of the range on).
OWN_TARIFF_EVERY = 10
OFFLINE_EVERY = 20


@dataclass(frozen=True)
class Scale:
    tenants: int
    sites: int
    days: int
    step: timedelta = timedelta(minutes=5)

    def describe(self) -> str:
        minutes = self.step.total_seconds() / 60
        return (
            f"{self.tenants} tenants, {self.sites} sites, {self.days} days,"
            f" one sample per site every {minutes:g} minutes"
        )


@dataclass
class Tenant:
    id: int
    slug: str
    zone: str
    nodes: list[str] = field(default_factory=list)


@dataclass
class Fleet:
    tenants: list[Tenant]

    @property
    def nodes(self) -> list[str]:
        return [n for t in self.tenants for n in t.nodes]


def node_id(tenant: int, site: int) -> str:
    return f"{PREFIX}t{tenant:02d}-s{site:05d}"


def online(node: str) -> bool:
    """Whether the site's node status says online (one in OFFLINE_EVERY is offline)."""
    return int(node.rsplit("s", 1)[1]) % OFFLINE_EVERY != 0


def create_fleet(db: Database, scale: Scale, origin: datetime) -> Fleet:
    """Tenants, their sites (spread evenly), node status and tariffs in force from before
    `origin`; a price change halfway through the range."""
    fleet = Fleet([])
    with db.connect() as conn, conn.transaction():
        for t in range(scale.tenants):
            zone, currency, price = ZONES[t % len(ZONES)]
            slug = f"{PREFIX}{t:02d}"
            [tenant_id] = conn.execute(
                "INSERT INTO tenants (slug, name, timezone) VALUES (%s, %s, %s) RETURNING id",
                (slug, f"Bench installer {t}", zone),
            ).fetchone()
            fleet.tenants.append(Tenant(tenant_id, slug, zone))
            first = origin.date() - timedelta(days=1)
            change = origin.date() + timedelta(days=scale.days // 2)
            for valid_from, factor in ((first, 1.0), (change, 1.1)):
                insert_tariff(conn, tenant_id, _time_of_use(valid_from, currency, price * factor))
        for site in range(scale.sites):
            tenant = fleet.tenants[site % scale.tenants]
            node = node_id(fleet.tenants.index(tenant), site)
            tenant.nodes.append(node)
            conn.execute(
                "INSERT INTO nodes (id, tenant_id, display_name) VALUES (%s, %s, %s)",
                (node, tenant.id, f"Site {site:05d}"),
            )
            if site % OWN_TARIFF_EVERY == OWN_TARIFF_EVERY - 1:
                zone, currency, price = ZONES[fleet.tenants.index(tenant) % len(ZONES)]
                own = origin.date() + timedelta(days=scale.days // 3)
                insert_tariff(conn, tenant.id, _time_of_use(own, currency, price * 0.9), node)
        conn.execute(
            "INSERT INTO node_status (node_id, state, last_seen_at, last_seq, agent_version)"
            " SELECT id, CASE WHEN substring(id FROM '[0-9]+$')::int %% %s = 0"
            " THEN 'offline' ELSE 'online' END, now(), 0, '0.1.0'"
            " FROM nodes WHERE id LIKE %s",
            (OFFLINE_EVERY, PREFIX + "%"),
        )
    return fleet


def _time_of_use(valid_from: date, currency: str, price: float) -> TariffVersion:
    """Peak 17-21 on weekdays, cheap nights, export paid a third of off-peak."""
    periods = [
        {"name": "peak", "weekdays": [1, 2, 3, 4, 5], "from_hour": 17, "to_hour": 21},
        {"name": "night", "from_hour": 0, "to_hour": 6},
    ]
    prices = {"peak": round(price * 1.6, 4), "night": round(price * 0.6, 4)}
    return flat_tariff(
        valid_from,
        price,
        round(price / 3, 4),
        currency=currency,
        periods=[{**p, "price": prices[str(p["name"])]} for p in periods],
    )


def load_fleet(db: Database) -> Fleet:
    """The benchmark's fleet already in the database (empty when there is none)."""
    with db.connect() as conn:
        tenants = [
            Tenant(tid, slug, zone)
            for tid, slug, zone in conn.execute(
                "SELECT id, slug, timezone FROM tenants WHERE slug LIKE %s ORDER BY slug",
                (PREFIX + "%",),
            ).fetchall()
        ]
        by_id = {t.id: t for t in tenants}
        for nid, tid in conn.execute(
            "SELECT id, tenant_id FROM nodes WHERE id LIKE %s ORDER BY id", (PREFIX + "%",)
        ).fetchall():
            by_id[tid].nodes.append(nid)
    return Fleet(tenants)


def foreign_telemetry(db: Database) -> bool:
    """Whether telemetry holds rows of tenants that are not the benchmark's."""
    with db.connect() as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM telemetry WHERE tenant_id NOT IN"
            " (SELECT id FROM tenants WHERE slug LIKE %s))",
            (PREFIX + "%",),
        ).fetchone()
    return bool(row[0])


# Every benchmark site with its number k, size, base load and gap (NULL: none).
# Parameters: origin, gap_days (the days after origin over which the gaps are spread;
# 0: no gaps) and the node id pattern.
SITES = """
SELECT z.node_id, z.tenant_id, z.timezone, k,
    3000 + (k * 37 %% 51) * 100 AS pv_peak,
    250 + (k * 13 %% 21) * 20 AS base_load,
    CASE WHEN %(gap_days)s > 0 THEN %(origin)s::timestamptz
        + make_interval(days => k * 7 %% greatest(%(gap_days)s, 1), hours => 8 + k %% 10)
    END AS gap_start
FROM site_zones z CROSS JOIN LATERAL (SELECT substring(z.node_id FROM '[0-9]+$')::int) s(k)
WHERE z.node_id LIKE %(nodes)s
"""

# One day of every site's samples; also step (s) and the day's first and last sample.
FILL_DAY = f"""
WITH sites AS ({SITES}),
shaped AS (
    SELECT g.ts, s.node_id, s.tenant_id, s.k, s.gap_start, h.h,
        CASE WHEN h.h > 6 AND h.h < 20
            THEN s.pv_peak * (0.35 + 0.65 * abs(sin(s.k * 12.9898
                + floor(extract(epoch FROM g.ts) / 86400) * 78.233)))
                * sin(pi() * (h.h - 6) / 14)
            ELSE 0 END AS pv,
        s.base_load + CASE WHEN h.h >= 17 AND h.h < 21 THEN 1500 ELSE 0 END
            + CASE WHEN h.h >= 6.5 AND h.h < 8.5 THEN 500 ELSE 0 END
            + 120 * sin(h.h * 3 + s.k) AS load
    FROM sites s
    CROSS JOIN generate_series(%(first)s::timestamptz, %(last)s::timestamptz,
        make_interval(secs => %(step)s)) g(ts)
    CROSS JOIN LATERAL (SELECT extract(epoch FROM (g.ts AT TIME ZONE s.timezone)::time)
        / 3600 AS h) h
    WHERE s.gap_start IS NULL OR g.ts < s.gap_start OR g.ts >= s.gap_start + %(gap)s
),
powered AS (
    SELECT *,
        CASE WHEN h >= 10 AND h < 14 THEN -least(2500, pv * 0.5)
            WHEN h >= 17 AND h < 21 THEN least(2000, load * 0.8) ELSE 0 END AS battery,
        CASE WHEN h < 10 THEN 20 WHEN h < 14 THEN 20 + (h - 10) * 15
            WHEN h < 17 THEN 80 WHEN h < 21 THEN 80 - (h - 17) * 15 ELSE 20 END AS soc,
        CASE WHEN ts = %(origin)s::timestamptz THEN 0
            WHEN ts = gap_start + %(gap)s THEN extract(epoch FROM %(gap)s) + %(step)s
            ELSE %(step)s END AS interval_s,
        CASE WHEN ts = %(origin)s::timestamptz OR ts = gap_start + %(gap)s THEN 0
            ELSE %(step)s END AS covered_s
    FROM shaped
)
INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent, battery_voltage_mv,
    battery_w, solar_w, grid_w, load_w, grid_price, grid_mode,
    received_at, interval_ms, covered_ms, pv_mwh, grid_import_mwh, grid_export_mwh, load_mwh,
    battery_charge_mwh, battery_discharge_mwh)
SELECT ts, node_id, tenant_id,
    (extract(epoch FROM ts - %(origin)s::timestamptz) / %(step)s)::bigint, soc, 51200,
    round(battery), round(pv), round(load - pv - battery), round(load), 0,
    CASE WHEN battery < 0 THEN 'CHARGE' WHEN battery > 0 THEN 'DISCHARGE'
        ELSE 'SELF_CONSUMPTION' END,
    ts, round(interval_s * 1000), round(covered_s * 1000),
    round(pv * covered_s / 3.6), round(greatest(load - pv - battery, 0) * covered_s / 3.6),
    round(greatest(pv + battery - load, 0) * covered_s / 3.6), round(load * covered_s / 3.6),
    round(greatest(-battery, 0) * covered_s / 3.6), round(greatest(battery, 0) * covered_s / 3.6)
FROM powered
"""

# The coordinator's two decisions a day per site (local 10:00 and 17:00), and each
# site's gap as offline, then online.
FILL_DECISIONS = f"""
INSERT INTO optimizer_decisions (ts, node_id, tenant_id, decision, grid_mode, mode, reason,
    battery_setpoint_w, target_soc_percent)
SELECT x.ts, s.node_id, s.tenant_id, v.decision, v.mode, v.mode, v.reason, v.setpoint,
    v.target
FROM ({SITES}) s
CROSS JOIN generate_series(%(first)s::timestamptz - interval '1 day',
    %(last)s::timestamptz + interval '1 day',
    '1 day') g(day)
CROSS JOIN (VALUES
    (time '10:00', 'charge from PV', 'CHARGE', 'PV surplus', -2500.0, 80.0),
    (time '17:00', 'discharge at peak', 'DISCHARGE', 'peak price', 2000.0, 20.0)
) v(at, decision, mode, reason, setpoint, target)
CROSS JOIN LATERAL (SELECT ((g.day AT TIME ZONE s.timezone)::date + v.at)
    AT TIME ZONE s.timezone AS ts) x
WHERE x.ts BETWEEN %(first)s::timestamptz AND %(last)s::timestamptz
ON CONFLICT DO NOTHING
"""
FILL_EVENTS = f"""
INSERT INTO node_events (ts, node_id, tenant_id, state, source)
SELECT e.ts, s.node_id, s.tenant_id, e.state, 'status'
FROM ({SITES}) s
CROSS JOIN LATERAL (VALUES (s.gap_start, 'offline'), (s.gap_start + %(gap)s, 'online'))
    e(ts, state)
WHERE e.ts BETWEEN %(first)s::timestamptz AND %(last)s::timestamptz
ON CONFLICT DO NOTHING
"""


def fill_telemetry(
    db: Database,
    origin: datetime,
    start: datetime,
    end: datetime,
    step: timedelta,
    gap_days: int,
    progress: Callable[[datetime, int], None] = lambda _day, _rows: None,
) -> int:
    """Every benchmark site's samples from `start` (on the grid from `origin`) up to
    `end`, a day per statement (one chunk each: indexes stay in memory); gaps spread over
    the first `gap_days` days after `origin`. Returns the rows written."""
    params = {
        "origin": origin,
        "gap_days": gap_days,
        "gap": GAP,
        "step": step.total_seconds(),
        "nodes": PREFIX + "%",
    }
    rows = 0
    with db.connect() as conn:
        day = start
        while day < end:
            last = min(day + timedelta(days=1), end) - step
            if last >= day:
                cursor = conn.execute(FILL_DAY, {**params, "first": day, "last": last})
                rows += cursor.rowcount
                for statement in (FILL_DECISIONS, FILL_EVENTS):
                    conn.execute(statement, {**params, "first": day, "last": last})
                progress(day, rows)
            day += timedelta(days=1)
    return rows

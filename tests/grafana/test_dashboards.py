"""Every panel's SQL, rendered as Grafana renders it, runs against TimescaleDB as the
role its organization's datasource logs in as, and returns the right numbers; a tenant's
role never sees another tenant's rows; the committed JSON is what the code generates."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from collector.inventory import record_inventory
from contract.fields import CONTINUOUS_AGGREGATES
from contract.inventory import NodeInventory
from control_api.audit import AuditEntry, append
from grafana import build
from tests.support.fleet import create_node, create_tenant, unique
from tests.support.grafana_sql import day_range, render
from tests.support.services import REPO, require_binary
from tests.support.tariffs import flat_tariff, insert_tariff
from tests.support.tenants import as_role, create_tenant_role
from tests.timescale.test_aggregates import DAY_PERIOD, _insert_minutes, refresh_all
from timescale.database import sqlalchemy_url

DASHBOARDS = REPO / "grafana" / "dashboards"
ADMIN_ROLE = "wattfleet_grafana_admin"


def site_inventory(node_id: str, firmware: str, ts: datetime) -> NodeInventory:
    return NodeInventory.model_validate(
        {
            "node_id": node_id,
            "ts": ts,
            "inverter": {
                "manufacturer": "Acme",
                "model": "HY-10",
                "firmware": firmware,
                "serial": "A-1",
                "sunspec_model": 103,
            },
            "battery": {"sunspec_model": 802, "capacity_wh": 10_000.0},
            "agent": {"version": "0.1.0", "python": "3.11.2", "os": "Linux"},
        },
        strict=False,
    )


def load(uid: str) -> dict[str, Any]:
    [path] = DASHBOARDS.glob(f"*/{uid}.json")
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def sql_targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, raw SQL) of every SQL query, variables' queries included."""
    found = [
        (panel["title"], target["rawSql"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]
    found += [
        (f"variable {v['name']}", v["query"])
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    ]
    return found


def panel_sql(dashboard: dict[str, Any], title: str) -> str:
    [sql] = [sql for t, sql in sql_targets(dashboard) if t == title]
    return sql


def test_committed_dashboards_are_what_the_code_generates():
    assert build.main(["--check"]) == 0, "run `python -m grafana.build` and commit the result"


def test_dashboards_are_where_their_audience_finds_them():
    assert sorted(p.name for p in (DASHBOARDS / "tenant").glob("*.json")) == [
        "wattfleet-savings.json",
        "wattfleet-site.json",
        "wattfleet-sites.json",
    ]
    assert sorted(p.name for p in (DASHBOARDS / "admin").glob("*.json")) == [
        "wattfleet-audit.json",
        "wattfleet-fleet.json",
        "wattfleet-stack.json",
    ]


@pytest.mark.integration
def _chunks(node: dict[str, Any]) -> list[str]:
    """The hypertable chunks a plan node and its children scan, in plan order."""
    found = [node["Relation Name"]] if node.get("Relation Name", "").startswith("_hyper_") else []
    for child in node.get("Plans", []):
        found += _chunks(child)
    return found


def _union_branches(node: dict[str, Any]) -> list[list[str]]:
    """The chunks each branch of the plan's first two-way append scans."""
    if node["Node Type"] in ("Append", "Merge Append") and len(node.get("Plans", [])) == 2:
        return [_chunks(branch) for branch in node["Plans"]]
    for child in node.get("Plans", []):
        if branches := _union_branches(child):
            return branches
    return []


class TestAgainstTimescale:
    @pytest.fixture(scope="class")
    @classmethod
    def world(cls, database) -> dict[str, Any]:
        """Tenant A with one hand-computed day two days ago and a live sample; tenant B
        with its own node and data."""
        tenant_a, tenant_b = create_tenant(database), create_tenant(database)
        node_a, node_b = create_node(database, tenant_a), create_node(database, tenant_b)
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=2
        )
        now = datetime.now(UTC).replace(microsecond=0)
        with database.connect() as conn:
            for tenant in (tenant_a, tenant_b):
                # Night 0.80, day (12-24 UTC) 0.40, export 0.10: from before the data.
                tariff = flat_tariff(
                    day.date() - timedelta(days=40), 0.80, 0.10, periods=[DAY_PERIOD]
                )
                insert_tariff(conn, tenant, tariff)
            _insert_minutes(conn, node_a, tenant_a, day, 24 * 60)
            _insert_minutes(conn, node_b, tenant_b, day, 24 * 60)
            conn.execute(
                "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent, solar_w,"
                " battery_w, grid_w, load_w, grid_price, grid_mode)"
                " VALUES (%s, %s, %s, 99999, 71.5, 2500, -400, -900, 1200, 0.42, 'AUTO')",
                (now - timedelta(minutes=1), node_a, tenant_a),
            )
            for node, state in ((node_a, "online"), (node_b, "offline")):
                # A's backlog has grown from 3 to 240 samples over the last 20 minutes.
                conn.execute(
                    "INSERT INTO node_status (node_id, state, last_seen_at, agent_version,"
                    " buffer_depth, oldest_unconfirmed_age_s, backlog_reported_at,"
                    " backlog_growth_base, backlog_growing_since)"
                    " VALUES (%s, %s, %s, '0.1.0', 240, 1300, %s, 3, %s)",
                    (node, state, now, now, now - timedelta(minutes=20)),
                )
                conn.execute(
                    "INSERT INTO node_events (ts, node_id, tenant_id, state, source)"
                    " VALUES (%s, %s, %s, %s, 'status')",
                    (
                        day + timedelta(hours=1),
                        node,
                        tenant_a if node == node_a else tenant_b,
                        state,
                    ),
                )
            # A's latest sample, as the collector keeps it beside the raw row.
            conn.execute(
                "UPDATE node_status SET latest_ts = %s, soc_percent = 71.5,"
                " solar_power_w = 2500, battery_power_w = -400, grid_power_w = -900,"
                " load_power_w = 1200, grid_mode = 'AUTO' WHERE node_id = %s",
                (now - timedelta(minutes=1), node_a),
            )
            # An admin can log in to A's Pi for the next half hour.
            conn.execute(
                "UPDATE node_status SET tunnel_state = 'open', tunnel_until = %s,"
                " tunnel_remote_port = 20022, tunnel_public_key = 'ssh-ed25519 AAAA'"
                " WHERE node_id = %s",
                (now + timedelta(minutes=30), node_a),
            )
            # A is safety-locked on site, its dynamic strategy off.
            conn.execute(
                "UPDATE node_status SET safety_locked = true, safety_lock_source = 'local',"
                " safety_lock_reason = 'installer at work', strategy_enabled = false,"
                " strategy = 'time_of_use' WHERE node_id = %s",
                (node_a,),
            )
            conn.execute(
                "INSERT INTO optimizer_decisions (ts, node_id, tenant_id, decision)"
                " VALUES (%s, %s, %s, 'charge from PV')",
                (day + timedelta(hours=13), node_a, tenant_a),
            )
            conn.execute(
                "INSERT INTO commands (id, node_id, tenant_id, type, params, state, issued_at,"
                " expires_at) VALUES (%s, %s, %s, 'FORCE_CHARGE', '{}', 'succeeded', %s, %s)",
                (unique("cmd"), node_a, tenant_a, now, now + timedelta(minutes=5)),
            )
            # A's inventory: a 10 kWh battery, its firmware updated from 2.4.1 to 2.4.2 now.
            for firmware, at in (("2.4.1", now - timedelta(days=3)), ("2.4.2", now)):
                with conn.cursor() as cur:
                    record_inventory(cur, site_inventory(node_a, firmware, at), tenant_a, at)
            refresh_all(conn)
            # As an operator does for the admin organization's datasource.
            conn.execute(f"ALTER ROLE {ADMIN_ROLE} LOGIN PASSWORD 'grafana-admin-test'")
        role_a, role_b = unique("tenant_a"), unique("tenant_b")
        return {
            "day": day,
            "now": now,
            "node_a": node_a,
            "node_b": node_b,
            "role_a": (role_a, create_tenant_role(database, tenant_a, role_a)),
            "role_b": (role_b, create_tenant_role(database, tenant_b, role_b)),
        }

    def query(self, database, role, sql, day=None, time_range=None, **variables):
        time_from, time_to = time_range or (
            day_range(day)
            if day
            else (
                datetime.now(UTC) - timedelta(hours=24),
                datetime.now(UTC),
            )
        )
        name, password = role
        with as_role(database, name, password) as conn:
            return conn.execute(render(sql, time_from, time_to, variables)).fetchall()

    def admin(self):
        return (ADMIN_ROLE, "grafana-admin-test")

    @pytest.mark.parametrize(
        "uid",
        [
            "wattfleet-fleet",
            "wattfleet-audit",
            "wattfleet-site",
            "wattfleet-savings",
            "wattfleet-sites",
        ],
    )
    def test_every_sql_runs_as_the_admin_organization(self, database, world, uid):
        """Each query must run (a broken one raises); the numbers are checked below."""
        dashboard = load(uid)
        for _title, sql in sql_targets(dashboard):
            variables: dict[str, Any] = {"node": world["node_a"]}
            if uid == "wattfleet-savings":
                variables["node"] = [world["node_a"], world["node_b"]]
            self.query(database, self.admin(), sql, world["day"], **variables)  # must not raise

    @pytest.mark.parametrize("uid", ["wattfleet-site", "wattfleet-savings", "wattfleet-sites"])
    def test_tenant_b_sees_nothing_of_tenant_a(self, database, world, uid):
        dashboard = load(uid)
        for title, sql in sql_targets(dashboard):
            # Even asked for A's node by name (a crafted URL), B's role finds nothing of it.
            rows = self.query(
                database,
                world["role_b"],
                sql,
                world["day"],
                node=world["node_a"] if uid == "wattfleet-site" else [world["node_a"]],
            )
            if title == "variable node":
                assert rows == [(world["node_b"], world["node_b"])], title
                continue
            if title == "Sites":
                # Its own site only, and nothing of A's.
                assert [r[0] for r in rows] == [world["node_b"]]
                continue
            flat = [v for row in rows for v in row if v is not None]
            assert all(v == 0 for v in flat if isinstance(v, int | float)), (title, rows)
            assert world["node_a"] not in json.dumps(rows, default=str), title

    def test_coverage_over_no_time_is_no_value(self, database, world):
        """A range of no time (a URL's `from=X&to=X`) and a local day's first instant
        leave a coverage with nothing to divide by: no value, not a failed query."""
        day, node = world["day"], world["node_a"]
        noon = day + timedelta(hours=12)
        savings = panel_sql(load("wattfleet-savings"), "Data coverage")
        rows = self.query(database, world["role_a"], savings, time_range=(noon, noon), node=[node])
        assert rows == [(None,)]
        # The Sites table as it reads at the site's (UTC) midnight starting the day with
        # data: that day's coverage so far is over no time.
        sites = panel_sql(load("wattfleet-sites"), "Sites")
        at_midnight = sites.replace("now()", f"'{day.isoformat()}'::timestamptz")
        assert at_midnight != sites
        [row] = self.query(database, world["role_a"], at_midnight)
        assert row[0] == node
        assert row[9] is None  # "coverage today %"
        # A second later it has a value (the column is the right one).
        later = sites.replace("now()", f"'{(day + timedelta(seconds=1)).isoformat()}'::timestamptz")
        [row] = self.query(database, world["role_a"], later)
        assert row[9] > 0

    def test_savings_for_the_hand_computed_day(self, database, world):
        dashboard = load("wattfleet-savings")
        day, node = world["day"], [world["node_a"]]

        def rows(title):
            return self.query(
                database, world["role_a"], panel_sql(dashboard, title), day, node=node
            )

        def value(title):
            [row] = rows(title)
            return tuple(round(v, 2) if isinstance(v, float) else v for v in row)

        # Import 12 kWh at 0.80 = 9.60, export 18 kWh at 0.10 = 1.80; grid-only 14.40.
        assert value("Savings") == ("PLN", 6.6)
        assert value("Net grid cost (import - export)") == ("PLN", 7.8)
        assert value("Grid-only cost") == ("PLN", 14.4)
        assert value("Saved vs grid-only") == ("PLN", round(100 * 6.6 / 14.4, 2))
        assert value("PV energy") == (36.0,)
        assert value("Grid import") == (12.0,)
        assert value("Grid export") == (18.0,)
        assert value("Data coverage") == (round(100 * 86400 / 86399, 2),)
        [energy] = rows("Energy per day")
        assert energy[0] == day.date().isoformat()
        assert [round(v, 2) for v in energy[1:]] == [36.0, 12.0, 18.0, 24.0, 6.0, 0.0]
        [month] = rows("Per month")
        assert month[:2] == (day.strftime("%Y-%m"), "PLN")
        assert month[12:] == (None, None, None)  # no gaps counted by meters
        assert [round(v, 2) for v in month[2:12]] == [
            36.0, 12.0, 18.0, 24.0, 9.6, 1.8, 7.8, 14.4, 6.6, round(100 * 6.6 / 14.4, 2)
        ]  # fmt: skip
        split = rows("By tariff period")
        # "day" (12-24 UTC): no import, 18 kWh exported, load 12 kWh at 0.40.
        assert [(r[0], r[1], *(round(v, 2) for v in r[2:9])) for r in split] == [
            ("day", "PLN", 0.0, 18.0, 12.0, 0.0, 1.8, -1.8, 4.8),
            ("standard", "PLN", 12.0, 0.0, 12.0, 9.6, 0.0, 9.6, 9.6),
        ]

    def test_site_series_read_hourly_buckets_from_an_hour_on(self, database, world):
        """The same figures from either aggregate; at an interval of an hour or more the
        plan holds no 5-minute bucket at all (the branch is pruned while planning)."""
        sql = panel_sql(load("wattfleet-site"), "Power")
        name, password = world["role_a"]
        time_from, time_to = day_range(world["day"])
        with database.connect() as conn:
            fine_id, coarse_id = (
                conn.execute(
                    "SELECT mat_hypertable_id FROM _timescaledb_catalog.continuous_agg"
                    " WHERE user_view_name = %s",
                    (view,),
                ).fetchone()[0]
                for view in CONTINUOUS_AGGREGATES[:2]
            )
        results, plans = {}, {}
        for interval in ("5m", "1h"):
            rendered = render(sql, time_from, time_to, {"node": world["node_a"]}, interval)
            with as_role(database, name, password) as conn:
                rows = conn.execute(rendered).fetchall()
                hourly: dict[datetime, list[list[float]]] = {}
                for t, *values in rows:
                    hourly.setdefault(t.replace(minute=0), []).append(values)
                results[interval] = {
                    t: [round(sum(v[i] for v in vs) / len(vs), 6) for i in range(4)]
                    for t, vs in hourly.items()
                }
                [[plan]] = conn.execute(f"EXPLAIN (FORMAT JSON) {rendered}").fetchone()
                plans[interval] = _union_branches(plan["Plan"])
        assert len(results["1h"]) == 24
        assert results["1h"] == results["5m"]
        # The union's branches (5-minute, hourly): the one the interval rules out reads
        # nothing. The hourly one may read 5-minute rows past its watermark (real-time
        # aggregation), so each is told by the aggregate it reads first. Chunks of an
        # aggregate's materialized hypertable are named _hyper_<its id>_.
        fine, coarse = plans["5m"]
        assert any(r.startswith(f"_hyper_{fine_id}_") for r in fine), fine
        assert coarse == [], coarse
        fine, coarse = plans["1h"]
        assert fine == [], fine
        assert coarse, plans
        assert coarse[0].startswith(f"_hyper_{coarse_id}_"), coarse

    def test_site_live_values_and_history(self, database, world):
        dashboard = load("wattfleet-site")
        node = world["node_a"]

        def one(title):
            [(v,)] = self.query(database, world["role_a"], panel_sql(dashboard, title), node=node)
            return v

        assert one("State") == "online"
        assert one("Battery") == 71.5
        assert one("Grid mode") == "AUTO"
        [price] = self.query(
            database, world["role_a"], panel_sql(dashboard, "Price now (per kWh)"), node=node
        )
        assert price == (0.80 if datetime.now(UTC).hour < 12 else 0.40, 0.10, "PLN")
        assert one("Agent version") == "0.1.0"
        assert one("Inverter") == "Acme HY-10"
        assert one("Firmware") == "2.4.2"
        assert one("Serial number") == "A-1"
        assert one("Battery capacity") == 10.0
        assert one("Battery energy now") == pytest.approx(7.15)  # 71.5 % of 10 kWh
        stored = self.query(
            database,
            world["role_a"],
            panel_sql(dashboard, "Battery energy (kWh)"),
            world["day"],
            node=node,
        )
        assert {round(r[1], 3) for r in stored} == {4.0, 8.0}  # SOC 40 and 80 %
        changes = self.query(
            database, world["role_a"], panel_sql(dashboard, "Inventory changes"), node=node
        )
        assert changes[0][1] == "inverter.firmware: 2.4.1 -> 2.4.2"
        assert "inverter.serial: - -> A-1" in changes[1][1]
        assert one("Remote access").startswith("OPEN until ")
        assert one("Safety lock") == "LOCKED (local: installer at work)"
        assert one("Dynamic strategy") == "off (self-consumption)"
        assert one("Buffered samples") == 240
        assert one("Oldest unconfirmed") == 1300
        assert one("Backlog growing since") == world["now"] - timedelta(minutes=20)
        assert one("Backlog reported") == world["now"]
        soc = self.query(
            database,
            world["role_a"],
            panel_sql(dashboard, "Battery state of charge"),
            world["day"],
            node=node,
        )
        assert len(soc) == 24 * 12  # a 5-minute point for each bucket of the day
        assert {round(r[1]) for r in soc} == {40, 80}
        decisions = self.query(
            database,
            world["role_a"],
            panel_sql(dashboard, "Optimizer decisions"),
            world["day"],
            node=node,
        )
        assert [d for _, d in decisions] == ["charge from PV"]
        [command] = self.query(
            database, world["role_a"], panel_sql(dashboard, "Recent commands"), node=node
        )
        assert command[1:3] == ("FORCE_CHARGE", "succeeded")

    def test_sites_lists_the_organizations_sites_offline_first(self, database, world):
        sql = panel_sql(load("wattfleet-sites"), "Sites")
        [own] = self.query(database, world["role_a"], sql)
        assert own[:3] == (world["node_a"], world["node_a"], "online")
        assert own[4:6] == (71.5, 2500.0)  # the live sample
        # Its lock, then its inverter and battery: model, firmware, serial, kWh, and the
        # SOC as energy.
        assert own[-6] == "locked (local)"
        assert own[-5:-1] == ("HY-10", "2.4.2", "A-1", 10.0)
        assert own[-1] == pytest.approx(7.15)
        every = self.query(database, self.admin(), sql)
        ours = [r[0] for r in every if r[0] in (world["node_a"], world["node_b"])]
        assert ours == [world["node_b"], world["node_a"]]  # offline first
        states = [r[2] for r in every]
        assert states == sorted(states, key=["offline", "unknown", "online"].index)

    def test_fleet_overview_counts_every_tenant(self, database, world):
        dashboard = load("wattfleet-fleet")
        rows = self.query(database, self.admin(), panel_sql(dashboard, "Nodes"))
        by_node = {r[0]: r for r in rows}
        assert by_node[world["node_a"]][3] == "online"
        assert by_node[world["node_b"]][3] == "offline"
        assert by_node[world["node_a"]][-5:-1] == ("HY-10", "2.4.2", "A-1", 10.0)
        assert by_node[world["node_a"]][-1] == pytest.approx(7.15)
        assert by_node[world["node_b"]][-5:] == (None,) * 5  # never reported one
        assert (by_node[world["node_a"]][-6], by_node[world["node_b"]][-6]) == (
            "locked (local)",
            None,
        )
        [(pv,)] = self.query(database, self.admin(), panel_sql(dashboard, "PV power now"))
        assert pv >= 2500

    def test_audit_shows_the_denied_requests_and_never_their_parameters(self, database, world):
        """Rows written as the API writes them (hash chain and all): the denied ones are
        listed and counted, the one that went through is not; the admin role reads no
        row's parameters."""
        tenant = create_tenant(database)
        prober, other = f"{unique('prober')}@example.com", f"{unique('ok')}@example.com"
        denied = [
            AuditEntry(
                "get_node", "denied", 7, prober, tenant, world["node_b"], {}, 404, "203.0.113.7"
            ),
            AuditEntry("list_users", "denied", 7, prober, tenant, None, {}, 403, "203.0.113.7"),
        ]
        engine = create_engine(
            sqlalchemy_url(database.url), connect_args={"prepare_threshold": None}
        )
        try:
            with engine.begin() as conn:
                ids = [append(conn, entry) for entry in denied]
                append(conn, AuditEntry("list_nodes", "ok", 8, other, tenant, status_code=200))
        finally:
            engine.dispose()
        dashboard = load("wattfleet-audit")
        # The time picker's range, in whole seconds as Grafana sends it, around the rows.
        around = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1))

        def panel(title):
            return self.query(
                database, self.admin(), panel_sql(dashboard, title), time_range=around
            )

        recent = panel("Recent denied requests")
        ours = [r for r in recent if r[1] == prober]
        with database.connect() as conn:
            slug = conn.execute("SELECT slug FROM tenants WHERE id = %s", (tenant,)).fetchone()[0]
        assert [r[1:] for r in ours] == [
            (prober, slug, "list_users", 403, None, "203.0.113.7"),
            (prober, slug, "get_node", 404, world["node_b"], "203.0.113.7"),
        ]
        assert other not in {r[1] for r in recent}
        by_caller = panel("Denied by caller")
        assert [r[:3] for r in by_caller if r[0] == prober] == [(prober, "203.0.113.7", 2)]
        [(count,)] = panel("Denied requests")
        assert count >= len(ids)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            self.query(database, self.admin(), "SELECT params FROM audit_log LIMIT 1")


def test_prometheus_expressions_parse(tmp_path: Path):
    """Stack health's PromQL, checked by promtool as recording rules."""
    exprs = [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in load("wattfleet-stack")["panels"]
        for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 8
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"wattfleet:panel_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps(rules))
    result = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


NOW_PANELS = [
    ("wattfleet-site", "Battery"),
    ("wattfleet-site", "Grid mode"),
    ("wattfleet-fleet", "PV power now"),
    ("wattfleet-fleet", "Battery power now (+ discharging)"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("uid", "title"), NOW_PANELS)
def test_now_panels_touch_no_telemetry_chunk(database, uid, title):
    """A "now" value costs the same whatever history is kept: its plan reads the node's
    latest sample from node_status, never a raw chunk (issue 18 found all 91 chunks
    decompressed through the tenant view)."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    role = unique("now")
    password = create_tenant_role(database, tenant, role)
    sql = render(panel_sql(load(uid), title), datetime.now(UTC) - timedelta(hours=24),
                 datetime.now(UTC), {"node": node})  # fmt: skip
    with as_role(database, role, password) as conn:
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}").fetchall())
    assert "_hyper_" not in plan, plan
    assert "telemetry" not in plan.replace("telemetry_", ""), plan

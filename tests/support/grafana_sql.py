"""Grafana's SQL templating, as its PostgreSQL datasource applies it, so tests can run a
dashboard's SQL against TimescaleDB.

Order as in Grafana: the frontend interpolates variables first (`$__interval`,
dashboard variables: a single value as is, a multi-value or "All" variable as quoted,
comma-separated values), then the datasource expands its macros. Macros follow
grafana-postgresql-datasource's `macros.go` with TimescaleDB enabled (`time_bucket`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(interval: str) -> float:
    match = re.fullmatch(r"'?(\d+)(ms|s|m|h|d)'?", interval.strip())
    if not match:
        raise ValueError(f"not a Grafana interval: {interval!r}")
    return int(match[1]) * _UNITS[match[2]]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def interpolate(sql: str, variables: dict[str, str | list[str]], interval: str) -> str:
    values: dict[str, str] = {"__interval": interval, "__rate_interval": interval}
    for name, value in variables.items():
        values[name] = ",".join(_quote(v) for v in value) if isinstance(value, list) else value
    for name in sorted(values, key=len, reverse=True):
        sql = sql.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return sql


def expand_macros(sql: str, time_from: datetime, time_to: datetime) -> str:
    def iso(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def macro(match: re.Match[str]) -> str:
        name, args = match[1], [a.strip() for a in (match[2] or "").split(",") if a.strip()]
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{iso(time_from)}' AND '{iso(time_to)}'"
        if name == "timeFrom":
            return f"'{iso(time_from)}'"
        if name == "timeTo":
            return f"'{iso(time_to)}'"
        if name in ("timeGroup", "timeGroupAlias"):
            group = f"time_bucket('{_seconds(args[1]):.0f}s',{args[0]})"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        if name == "time":
            return f'{args[0]} AS "time"'
        raise ValueError(f"macro $__{name} is not expanded by this harness")

    return re.sub(r"\$__(\w+)\(([^()]*)\)", macro, sql)


def render(
    sql: str,
    time_from: datetime,
    time_to: datetime,
    variables: dict[str, str | list[str]] | None = None,
    interval: str = "5m",
) -> str:
    """The SQL Grafana would send for this time range and these variables."""
    return expand_macros(interpolate(sql, variables or {}, interval), time_from, time_to)


def day_range(day: datetime) -> tuple[datetime, datetime]:
    """A time picker set to one whole UTC day (Grafana's ranges end inclusive at :59)."""
    return day, day + timedelta(days=1) - timedelta(seconds=1)

"""A query for Grafana's PostgreSQL datasource, for the foundation SDK's builders (the SDK
ships no PostgreSQL query type). Raw SQL in code mode, as Grafana stores it."""

from __future__ import annotations

import typing

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants

from grafana.datasources import TIMESCALE_TYPE, TIMESCALE_UID

Format = typing.Literal["time_series", "table"]


class SqlQuery(cogvariants.Dataquery):
    def __init__(self, raw_sql: str = "", ref_id: str = "A", format_: Format = "table") -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.format = format_

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": TIMESCALE_TYPE, "uid": TIMESCALE_UID},
            "editorMode": "code",
            "rawQuery": True,
            "format": self.format,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    """`Sql("SELECT ...").time_series()`; table format unless told otherwise."""

    def __init__(self, raw_sql: str, ref_id: str = "A") -> None:
        self._internal = SqlQuery(raw_sql.strip(), ref_id)

    def build(self) -> SqlQuery:
        return self._internal

    def time_series(self) -> typing.Self:
        self._internal.format = "time_series"
        return self

"""The site's grid prices at a moment, from its tariffs in its local time
(contract/tariff.py): what `grid.current_price` says, what the status page shows and
what the coordinator interface hands the site's optimizer.

The tariff version in force on the local day prices each local hour (DST included:
the hours of a 23- or 25-hour day are its local hours). While none is in force (the hub
has sent none yet, or they start later) the config's fallback applies: `price_per_kwh`,
`peak_price_per_kwh` from the start of `peak_hours` up to its end, local hours too, and
no export price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from contract.node_config import NodeConfig
from contract.tariff import hour_of_week, in_force


@dataclass(frozen=True)
class Prices:
    """Per kWh at one moment. `currency`, `export_per_kwh` and `period` are None while no
    tariff is in force."""

    import_per_kwh: float
    export_per_kwh: float | None
    currency: str | None
    period: str | None

    @property
    def from_tariff(self) -> bool:
        return self.currency is not None


class SitePrices:
    def __init__(self, config: NodeConfig) -> None:
        self.zone = ZoneInfo(config.timezone)
        self.tariffs = config.tariffs
        self.price_per_kwh = config.price_per_kwh
        self.peak_price_per_kwh = config.peak_price_per_kwh
        self.peak_hours = config.peak_hours

    def at(self, when: datetime) -> Prices:
        """The prices at an aware time."""
        local = when.astimezone(self.zone)
        version = in_force(self.tariffs, local.date())
        if version is None:
            start, end = self.peak_hours
            peak = start <= local.hour < end
            return Prices(self.peak_price_per_kwh if peak else self.price_per_kwh, None, None, None)
        slot = hour_of_week(local)
        return Prices(
            version.import_grid()[slot],
            version.export_grid()[slot],
            version.currency,
            version.import_period_names()[slot],
        )

    def hours_of_day(self, when: datetime) -> list[tuple[datetime, Prices]]:
        """Each local hour of `when`'s local day (23, 24 or 25 of them), its start in
        local time and its prices."""
        day = when.astimezone(self.zone).date()
        start = datetime.combine(day, time(), tzinfo=self.zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=self.zone).astimezone(UTC)
        hours = []
        while start < end:
            hours.append((start.astimezone(self.zone), self.at(start)))
            start += timedelta(hours=1)
        return hours

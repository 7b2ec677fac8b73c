"""A site's time zone and its tariff: what a kWh bought from the grid costs and what one
sold to it earns, by weekday and hour in the site's local time. Declared once here: the
hub validates and stores tariffs with it (control API), the agent receives its site's
tariffs in its config and prices `grid.current_price` with it, and the hub's analytics
read the price grids it expands to (`import_grid`, `export_grid`: one price per hour of
the week, Monday 00:00 first), which the `tariffs` table stores beside the tariff.

A price period names whole local hours of chosen weekdays; the hours no period names
cost the default price. Periods may not overlap, so every hour of the week has exactly
one price and one period name. A tariff version is in force from local midnight of its
`valid_from` day until the next version's: a price change never rewrites the days
before it.
"""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime
from functools import cache
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from contract.fields import MAX_ABS_PRICE_PER_KWH
from contract.text import STORABLE

HOURS_PER_WEEK = 7 * 24
MAX_PERIODS = 32
# A node's config carries its site's versions in force now and later; no more than this.
MAX_VERSIONS_IN_CONFIG = 16


# Files of the zone database that are no zone of their own (PostgreSQL knows neither).
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - NOT_ZONES


def _time_zone(name: str) -> str:
    if name not in _known_zones():
        raise ValueError("this is not an IANA time zone (e.g. 'Europe/Warsaw', 'UTC')")
    return name


# An IANA time zone name, as both Python's zoneinfo and PostgreSQL know them.
TimeZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=64), STORABLE, AfterValidator(_time_zone)
]
Price = Annotated[float, Field(ge=-MAX_ABS_PRICE_PER_KWH, le=MAX_ABS_PRICE_PER_KWH)]
# ISO 4217: three capital letters.
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
PeriodName = Annotated[str, StringConstraints(min_length=1, max_length=32), STORABLE]
Weekday = Annotated[int, Field(ge=1, le=7)]  # ISO: 1 Monday ... 7 Sunday


class PricePeriod(BaseModel):
    """`price` from local hour `from_hour` up to (not including) `to_hour` on `weekdays`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: PeriodName
    weekdays: list[Weekday] = Field(default=[1, 2, 3, 4, 5, 6, 7], min_length=1, max_length=7)
    from_hour: int = Field(ge=0, le=23)
    to_hour: int = Field(ge=1, le=24)
    price: Price

    @model_validator(mode="after")
    def _hours_in_order(self) -> PricePeriod:
        if self.from_hour >= self.to_hour:
            raise ValueError(
                f"period {self.name!r}: from_hour ({self.from_hour}) must come before"
                f" to_hour ({self.to_hour})"
            )
        if len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError(f"period {self.name!r}: a weekday is listed twice")
        return self


class TimeOfUsePrice(BaseModel):
    """A price per kWh by local weekday and hour: `default_price` where no period says."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    default_price: Price
    default_name: PeriodName = "standard"
    periods: list[PricePeriod] = Field(default=[], max_length=MAX_PERIODS)

    @model_validator(mode="after")
    def _no_overlap(self) -> TimeOfUsePrice:
        owner: dict[int, str] = {}
        for period in self.periods:
            for slot in _slots(period):
                if slot in owner:
                    day, hour = divmod(slot, 24)
                    raise ValueError(
                        f"periods {owner[slot]!r} and {period.name!r} overlap"
                        f" (weekday {day + 1}, hour {hour})"
                    )
                owner[slot] = period.name
        return self

    def grid(self) -> tuple[list[float], list[str]]:
        """The price and period name of each hour of the week, Monday 00:00 first."""
        prices = [self.default_price] * HOURS_PER_WEEK
        names = [self.default_name] * HOURS_PER_WEEK
        for period in self.periods:
            for slot in _slots(period):
                prices[slot] = period.price
                names[slot] = period.name
        return prices, names


def _slots(period: PricePeriod) -> list[int]:
    return [
        (day - 1) * 24 + hour
        for day in period.weekdays
        for hour in range(period.from_hour, period.to_hour)
    ]


def hour_of_week(local: datetime) -> int:
    """The index of a local time's hour in a price grid (Monday 00:00 is 0)."""
    return local.weekday() * 24 + local.hour


class Tariff(BaseModel):
    """What grid energy costs (import) and earns (export), in `currency` per kWh."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    currency: Currency
    import_price: TimeOfUsePrice
    export_price: TimeOfUsePrice

    def import_grid(self) -> list[float]:
        return self.import_price.grid()[0]

    def export_grid(self) -> list[float]:
        return self.export_price.grid()[0]

    def import_period_names(self) -> list[str]:
        return self.import_price.grid()[1]


# The days a version may start on. Anything else is a typing error (a probe set years 1
# and 9999), and a day's end past year 9999 is beyond Python's dates.
EARLIEST_VALID_FROM = date(2000, 1, 1)
LATEST_VALID_FROM = date(2099, 12, 31)


class TariffVersion(Tariff):
    """A tariff in force from local midnight of `valid_from` until the next version's."""

    valid_from: Annotated[date, Field(ge=EARLIEST_VALID_FROM, le=LATEST_VALID_FROM)]


def _versions_in_order(versions: list[TariffVersion]) -> list[TariffVersion]:
    days = [v.valid_from for v in versions]
    if days != sorted(set(days)):
        raise ValueError("tariff versions must be ordered by valid_from, each day once")
    return versions


# A node config's `tariffs`: its site's versions, oldest first.
TariffVersions = Annotated[
    list[TariffVersion],
    Field(max_length=MAX_VERSIONS_IN_CONFIG),
    AfterValidator(_versions_in_order),
]


def in_force(versions: list[TariffVersion], local_day: date) -> TariffVersion | None:
    """The version in force on a local day: the newest whose valid_from is not after it."""
    current = None
    for version in versions:
        if version.valid_from <= local_day:
            current = version
    return current


def prices_at(versions: list[TariffVersion], local: datetime) -> tuple[float, float] | None:
    """(import, export) price per kWh at a local time, None when no version is in force."""
    version = in_force(versions, local.date())
    if version is None:
        return None
    slot = hour_of_week(local)
    return version.import_grid()[slot], version.export_grid()[slot]

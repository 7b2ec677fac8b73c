"""The site's prices in its local time (edge/prices.py): the tariff version in force on
the local day, DST included, and the config's fallback while none is."""

from __future__ import annotations

from datetime import UTC, datetime

from contract.node_config import NodeConfig
from edge.prices import Prices, SitePrices

VERSIONS = [
    {
        "valid_from": "2026-10-01",
        "currency": "PLN",
        "import_price": {
            "default_price": 0.8,
            "periods": [{"name": "night", "from_hour": 0, "to_hour": 6, "price": 0.4}],
        },
        "export_price": {"default_price": 0.2},
    },
    {
        "valid_from": "2026-10-26",
        "currency": "PLN",
        "import_price": {"default_price": 0.9},
        "export_price": {"default_price": 0.25},
    },
]


def prices(**config: object) -> SitePrices:
    return SitePrices(NodeConfig(node_id="n1", **config))  # type: ignore[arg-type]


def test_the_price_is_the_local_hours_of_the_version_in_force():
    site = prices(timezone="Europe/Warsaw", tariffs=VERSIONS)
    # 04:30 UTC is 05:30 in Warsaw in winter time: night.
    assert site.at(datetime(2026, 10, 25, 4, 30, tzinfo=UTC)) == Prices(0.4, 0.2, "PLN", "night")
    assert site.at(datetime(2026, 10, 25, 5, 30, tzinfo=UTC)).import_per_kwh == 0.8
    # The next version from local midnight of its day: 23:00 UTC on the 25th.
    assert site.at(datetime(2026, 10, 25, 22, 59, tzinfo=UTC)).import_per_kwh == 0.8
    assert site.at(datetime(2026, 10, 25, 23, 0, tzinfo=UTC)) == Prices(
        0.9, 0.25, "PLN", "standard"
    )


def test_the_day_the_clocks_go_back_has_25_local_hours():
    site = prices(timezone="Europe/Warsaw", tariffs=VERSIONS)
    hours = site.hours_of_day(datetime(2026, 10, 25, 12, 0, tzinfo=UTC))
    assert len(hours) == 25
    starts = [start.strftime("%H%z") for start, _ in hours[:5]]
    assert starts == ["00+0200", "01+0200", "02+0200", "02+0100", "03+0100"]
    assert [p.import_per_kwh for _, p in hours[:8]] == [0.4] * 7 + [0.8]
    spring = site.hours_of_day(datetime(2026, 3, 29, 12, 0, tzinfo=UTC))
    assert len(spring) == 23


def test_before_any_version_the_fallback_peak_is_in_local_hours_without_export():
    site = prices(timezone="Europe/Warsaw", tariffs=VERSIONS, peak_hours=(17, 21))
    # 15:30 UTC is 17:30 in Warsaw in summer: peak.
    assert site.at(datetime(2026, 7, 1, 15, 30, tzinfo=UTC)) == Prices(0.85, None, None, None)
    assert site.at(datetime(2026, 7, 1, 19, 30, tzinfo=UTC)).import_per_kwh == 0.55
    assert prices().at(datetime(2026, 7, 1, 17, 30, tzinfo=UTC)).import_per_kwh == 0.85

"""A simple rule-based site coordinator, as a site's "Master Coordinator" would run on
the Pi: it reads the agent's coordinator interface (`GET /context`), decides, posts the
decision (`POST /decision`) and has the simulated battery follow it.

The rule: self-consumption while the site is safety-locked or its strategy is off, and
by day (the sun charges the battery); at night, charge from the grid while the import
price is the cheapest of the local day (and cheaper than its dearest hour) and the
battery is under TARGET_SOC_PERCENT; otherwise self-consumption.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from contract.failure_log import FailureLog
from edge.simulator.device import SimulatedInverter

log = logging.getLogger(__name__)

CHARGE_FROM_GRID = "CHARGE_FROM_GRID"
SELF_CONSUMPTION = "SELF_CONSUMPTION"
TARGET_SOC_PERCENT = 90.0
# Below this much PV it is night for the rule.
DAYLIGHT_W = 100.0
# Charging from the grid at this share of the battery's maximum power.
CHARGE_SHARE = 0.5


def decide(context: dict[str, Any], max_battery_w: float, valid_for_s: int) -> dict[str, Any]:
    """The decision (a `POST /decision` body) for a `GET /context` answer."""
    price = context["prices_now"]["import_per_kwh"]
    today = [hour["import_per_kwh"] for hour in context["prices_today"]]
    currency = context["prices_now"]["currency"] or "per kWh"
    reading = context.get("reading") or {}
    soc, pv = reading.get("soc_percent"), reading.get("solar_power_w") or 0.0
    if context["safety_lock"]["locked"]:
        mode, reason = SELF_CONSUMPTION, "the site is safety-locked"
    elif not context["strategy"]["enabled"]:
        mode, reason = SELF_CONSUMPTION, "the site's strategy is off"
    elif pv >= DAYLIGHT_W:
        mode, reason = SELF_CONSUMPTION, f"daylight: the sun gives {pv:.0f} W"
    elif price > min(today) or min(today) == max(today):
        mode = SELF_CONSUMPTION
        reason = f"import at {price:.2f} {currency} is not the day's cheapest"
    elif soc is None:
        mode, reason = SELF_CONSUMPTION, "the battery's charge is unknown"
    elif soc >= TARGET_SOC_PERCENT:
        mode, reason = SELF_CONSUMPTION, f"the battery is at {soc:.0f} %, charged enough"
    else:
        return {
            "mode": CHARGE_FROM_GRID,
            "reason": f"import at {price:.2f} {currency} is the day's cheapest;"
            f" the battery is at {soc:.0f} %",
            "battery_setpoint_w": -CHARGE_SHARE * max_battery_w,
            "target_soc_percent": TARGET_SOC_PERCENT,
            "valid_for_s": valid_for_s,
        }
    return {"mode": mode, "reason": reason, "valid_for_s": valid_for_s}


def http_url(url: str) -> str:
    """The URL without a trailing slash; ValueError unless it is http(s)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// URL")
    return url.rstrip("/")


# S310: the URLs below are an http(s) URL the operator gave (http_url).
def _exchange(url: str, decide_on: Any) -> dict[str, Any]:
    """GET /context, decide, POST /decision; the decision posted. Raises OSError or
    ValueError when the agent does not answer or answers nonsense."""
    with urllib.request.urlopen(f"{url}/context", timeout=5) as response:  # noqa: S310
        decision: dict[str, Any] = decide_on(json.load(response))
    request = urllib.request.Request(  # noqa: S310
        f"{url}/decision",
        data=json.dumps(decision).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310
        return decision


async def coordinate(url: str, inverter: SimulatedInverter, every_s: float) -> None:
    """Decides every `every_s` seconds until cancelled, against the interface at `url`
    (see `http_url`); an agent that does not answer
    (not started yet, restarting) is logged once and asked again next time."""
    failures = FailureLog(log)
    valid_for_s = max(1, round(3 * every_s))
    while True:
        # First a period's wait: the agent starts after its simulator.
        await asyncio.sleep(every_s)
        try:
            decision = await asyncio.to_thread(
                _exchange,
                url,
                lambda context: decide(context, inverter.site.max_battery_w, valid_for_s),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            failures.failed("coordinator: the agent at %s did not take a decision: %s", url, exc)
        else:
            if failures.recover():
                log.info("coordinator: the agent at %s answers again", url)
            inverter.follow(decision["mode"] == CHARGE_FROM_GRID, CHARGE_SHARE * 100)

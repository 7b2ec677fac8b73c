"""A time a node states is taken only within years 2000-9998 (UTC): PostgreSQL stores
`0001-01-01T00:00:00+14:00` as 1 BC, which Python cannot read back, so one such value
from a node once made every `GET /nodes` of its tenant answer 500 and its later reports
fail to store."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contract.commands import Ack
from contract.node_config import ReportedConfig
from contract.telemetry import NODE_STATUS

GOOD = "2026-12-01T10:00:00+01:00"
WRONG_CLOCKS = [
    "0001-01-01T00:00:00+14:00",  # 1 BC in UTC
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",  # a Pi without a clock before NTP
    "1999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
    "9999-06-01T00:00:00Z",
]


def _status(ts: str = GOOD, since: str = GOOD, until: str = GOOD) -> dict[str, Any]:
    return {
        "state": "online",
        "ts": ts,
        "safety_lock": {"locked": True, "source": "local", "by": "installer", "since": since},
        "tunnel": {"state": "open", "until": until},
    }


CASES = {
    "status ts": lambda t: NODE_STATUS.validate_python(_status(ts=t)),
    "lock since": lambda t: NODE_STATUS.validate_python(_status(since=t)),
    "tunnel until": lambda t: NODE_STATUS.validate_python(_status(until=t)),
    "ack ts": lambda t: Ack.model_validate(
        {"id": "0193a5b2-7c1e-7d8a-9f00-000000000001", "state": "succeeded", "ts": t}
    ),
    "reported config ts": lambda t: ReportedConfig.model_validate(
        {"version": 1, "ts": t, "config": {}}
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_plausible_time_is_taken(case):
    CASES[case](GOOD)


@pytest.mark.parametrize("ts", WRONG_CLOCKS)
@pytest.mark.parametrize("case", CASES)
def test_a_time_outside_the_years_is_refused_with_why(case, ts):
    with pytest.raises(ValidationError, match="the node's clock is wrong"):
        CASES[case](ts)

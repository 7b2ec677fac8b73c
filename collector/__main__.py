"""`wattfleet-collector` (or `python -m collector`): settings from `WATTFLEET_*`, runs
until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from collector.config import CollectorSettings
from collector.service import run
from contract.process import configure_logging, stop_on_signals


def main() -> int:
    argparse.ArgumentParser(
        prog="wattfleet-collector",
        description="wattfleet collector: MQTT telemetry in, TimescaleDB rows out. Settings "
        "come from WATTFLEET_* environment variables (see the README).",
    ).parse_args()
    try:
        settings = CollectorSettings()
    except ValidationError as exc:
        print(f"collector: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    run(settings, stop_on_signals())
    return 0


if __name__ == "__main__":
    sys.exit(main())

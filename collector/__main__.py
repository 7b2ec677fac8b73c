"""`wattfleet-collector` (or `python -m collector`): settings from `WATTFLEET_*`, runs
until SIGTERM or SIGINT. `wattfleet-collector http-ingest` serves the HTTPS telemetry
endpoint instead (collector/http_ingest.py), with the same settings."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from collector.config import CollectorSettings
from collector.http_ingest import serve
from collector.service import run
from contract.process import configure_logging, stop_on_signals


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="wattfleet-collector",
        description="wattfleet collector: MQTT telemetry in, TimescaleDB rows out. Settings "
        "come from WATTFLEET_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("mqtt", help="the MQTT intake (the default)")
    sub.add_parser("http-ingest", help="the HTTPS telemetry endpoint")
    args = parser.parse_args()
    try:
        settings = CollectorSettings()
    except ValidationError as exc:
        print(f"collector: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "http-ingest":
        serve(settings)
        return 0
    run(settings, stop_on_signals())
    return 0


if __name__ == "__main__":
    sys.exit(main())

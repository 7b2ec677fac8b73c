"""`wattfleet-simulator --host 127.0.0.1 --port P [--unit-id U] [--seed S] [--at HH:MM]
[--firmware V]` (or `python -m edge.simulator ...`)

Serves one simulated site as a SunSpec Modbus TCP device until SIGTERM or Ctrl-C. Run
several with different ports (and seeds) for a fleet. With `--serial /dev/ttyX` it serves
Modbus RTU on that serial line instead (`--baudrate`, default 19200). With
`--coordinator http://127.0.0.1:PORT` it also runs the site's rule-based coordinator
against that agent's coordinator interface (edge/simulator/coordinator.py), every
`--coordinator-every-s` seconds, and its battery follows the decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from datetime import UTC, datetime

from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from edge.simulator.coordinator import coordinate, http_url
from edge.simulator.device import FIRMWARE, SimulatedInverter
from edge.simulator.site import Site


def frozen_clock(at: str) -> float:
    """Seconds since the epoch for today's HH:MM (UTC): the simulated clock stands still."""
    hour, minute = (int(part) for part in at.split(":"))
    today = datetime.now(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return today.timestamp()


async def serve(args: argparse.Namespace) -> None:
    clock = time.time
    if args.at:
        fixed = frozen_clock(args.at)
        clock = lambda: fixed  # noqa: E731 - a constant clock
    inverter = SimulatedInverter(Site(seed=args.seed, soc_percent=args.soc), args.unit_id, clock)
    inverter.firmware = args.firmware
    server: ModbusSerialServer | ModbusTcpServer
    if args.serial:
        server = inverter.serial_server(args.serial, args.baudrate)
        where = f"{args.serial} at {args.baudrate} baud"
    else:
        server = inverter.server(args.host, args.port)
        where = f"{args.host}:{args.port}"
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))  # type: ignore[no-untyped-call]
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.1)
    print(f"simulator listening on {where} unit {args.unit_id}", flush=True)
    if args.coordinator:
        coordinator = asyncio.create_task(
            coordinate(args.coordinator, inverter, args.coordinator_every_s)
        )
        task.add_done_callback(lambda _: coordinator.cancel())
    await task


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="wattfleet-simulator", description="A simulated SunSpec hybrid inverter site."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--serial", metavar="DEVICE", help="serve Modbus RTU on this port")
    parser.add_argument("--baudrate", type=int, default=19200)
    parser.add_argument("--unit-id", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1, help="site variation (PV size, load)")
    parser.add_argument("--soc", type=float, default=50.0, help="initial state of charge, %%")
    parser.add_argument("--at", metavar="HH:MM", help="freeze the simulated clock (UTC)")
    parser.add_argument(
        "--firmware", default=FIRMWARE, help="the inverter's firmware version (common model Vr)"
    )
    parser.add_argument(
        "--coordinator",
        type=http_url,
        metavar="URL",
        help="run the site's coordinator against the agent's interface at this URL",
    )
    parser.add_argument("--coordinator-every-s", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

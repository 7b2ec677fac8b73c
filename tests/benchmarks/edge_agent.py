"""The edge agent's footprint while publishing live, and its backlog replay end to end.

    .venv/bin/python -m tests.benchmarks.edge_agent [--live-seconds 30] [--backlog 120960]
        [--ingest-confirmations true|false]

Real Mosquitto (repo config), the simulator, the real collector (`python -m collector`)
and TimescaleDB (embedded unless WATTFLEET_DATABASE_URL names one). Live: the agent polls
and publishes every second; prints its CPU share and RSS. Replay: the buffer of another
node starts with a week of 5-second samples (written straight into its SQLite file) and
the agent sends them all; timed until the last of them is confirmed by the collector
and deleted from the buffer, and every one is a row in the database; prints samples/s,
CPU and peak RSS. `--ingest-confirmations false` runs the agent as for a hub without
confirmations (deleting on PUBACK), timed until every row is in the database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.buffer import SCHEMA
from tests.benchmarks.ingest import cpu_seconds
from tests.support.agent import AgentProcess
from tests.support.fleet import (
    Node,
    count_rows,
    create_tenant,
    enroll,
    sample,
    scrape,
)
from tests.support.services import (
    REPO,
    Broker,
    Database,
    collector_env,
    database_from_env,
    free_port,
    migrate,
    service_env,
    start_module,
    stop_process,
    wait_for,
    wait_for_port,
)

UNIT = 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prefill(path: Path, node_id: str, samples: int) -> None:
    """A week of 5-second samples, as the agent would have buffered them."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    start = datetime.now(UTC) - timedelta(seconds=5 * samples)
    rows = []
    for seq in range(samples):
        ts = start + timedelta(seconds=5 * seq)
        rows.append(
            (seq, ts.isoformat(), json.dumps(sample(node_id, seq, ts), separators=(",", ":")))
        )
    db.executemany("INSERT INTO samples VALUES (?, ?, ?)", rows)
    db.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (samples,))
    db.commit()
    db.close()


def still_buffered(path: Path, below_seq: int) -> int:
    """How many of the seqs below `below_seq` the agent's buffer still holds."""
    with sqlite3.connect(path) as db:
        return int(
            db.execute("SELECT count(*) FROM samples WHERE seq < ?", (below_seq,)).fetchone()[0]
        )


def stored(db: Database, node_id: str, below_seq: int) -> int:
    return count_rows(
        db,
        "SELECT count(*) FROM telemetry WHERE node_id = %s AND seq < %s",
        (node_id, below_seq),
    )


def measure(agent: AgentProcess, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, peak RSS MB) over `seconds`."""
    pid = agent.proc.pid
    cpu0, t0, peak = cpu_seconds(pid), time.monotonic(), 0.0
    while time.monotonic() - t0 < seconds:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.5)
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100, peak


def start_collector(db: Database, broker: Broker, workdir: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    proc = start_module(
        "collector",
        collector_env(db, broker, "collector-bench", port, log_level="WARNING"),
        workdir / "collector.log",
    )
    wait_for_port(port, 30, proc)
    wait_for(
        lambda: scrape(port).get("wattfleet_collector_broker_connected") == 1,
        30,
        "collector connected",
    )
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live-seconds", type=float, default=30)
    parser.add_argument("--backlog", type=int, default=7 * 24 * 720)  # 5-s samples a week
    parser.add_argument("--ingest-confirmations", choices=["true", "false"], default="true")
    args = parser.parse_args()
    confirmations = args.ingest_confirmations == "true"
    backlog: int = args.backlog
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-edge-bench-"))
    workdir.chmod(0o755)
    db = database_from_env("WATTFLEET_DATABASE_URL")
    broker = Broker(workdir / "broker").start()
    sim_port = free_port()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "edge.simulator", "--port", str(sim_port), "--at", "12:00"],
        cwd=REPO,
        env=service_env(),
        stdout=subprocess.DEVNULL,
    )
    collector = None
    try:
        migrate(db)
        wait_for_port(sim_port, 15, simulator)
        # One node per phase: the replay's seqs start at 0 again.
        live_node, replay_node = enroll(db, broker, create_tenant(db), count=2)
        collector = start_collector(db, broker, workdir)

        def agent(node: Node, name: str, poll_interval_s: float) -> AgentProcess:
            folder = workdir / name
            folder.mkdir()
            return AgentProcess(
                folder,
                broker,
                node,
                sim_port,
                UNIT,
                via_proxy=False,
                log_level="WARNING",
                poll_interval_s=poll_interval_s,
                ingest_confirmations=confirmations,
            )

        live = agent(live_node, "live", 1.0).start()
        wait_for(lambda: stored(db, live_node.id, 2**62) >= 2, 60, "live samples stored")
        live_cpu, live_rss = measure(live, args.live_seconds)
        live_buffered = len(live.buffered())
        stop_process(live.proc)

        replay = agent(replay_node, "replay", 5.0)
        prefill(replay.buffer_path, replay_node.id, args.backlog)
        started = time.monotonic()
        replay.start()
        cpu0 = None
        peak = 0.0

        def done() -> bool:
            """The last of the backlog confirmed (deleted from the buffer) and every one
            of it a row; without confirmations, every one a row. (The database is asked
            only once the buffer is empty.)"""
            if confirmations and still_buffered(replay.buffer_path, backlog):
                return False
            return stored(db, replay_node.id, backlog) == backlog

        while not done():
            if cpu0 is None:
                cpu0 = cpu_seconds(replay.proc.pid)
            peak = max(peak, rss_mb(replay.proc.pid))
            if time.monotonic() - started > 600:
                raise RuntimeError("replay took more than 10 minutes")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        replay_cpu = (cpu_seconds(replay.proc.pid) - (cpu0 or 0)) / elapsed * 100
        stop_process(replay.proc)
    finally:
        if collector is not None:
            stop_process(collector)
        stop_process(simulator)
        broker.stop()
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"database: {'embedded TimescaleDB (PGlite)' if db.embedded else db.url}")
    print(
        f"ingest confirmations: {'on' if confirmations else 'off (deleted on PUBACK)'}; "
        f"agent RSS limit 60 MB"
    )
    print(
        f"live (1 sample/s, {args.live_seconds:g} s): CPU {live_cpu:.1f} % of a core, "
        f"RSS {live_rss:.0f} MB, {live_buffered} samples still buffered at the end"
    )
    print(
        f"replay of {args.backlog} buffered samples, until the last is "
        f"{'confirmed' if confirmations else 'stored'}: {elapsed:.1f} s, "
        f"{args.backlog / elapsed:,.0f} samples/s, CPU {replay_cpu:.0f} % of a core, "
        f"peak RSS {peak:.0f} MB (includes agent start-up)"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

"""Samples/s through the HTTPS ingest endpoint, next to the MQTT collector's.

    .venv/bin/python -m tests.benchmarks.http_ingest [--samples 50000] [--nodes 50]
        [--batch 200] [--clients 4] [--rounds 3]

Each round: the endpoint (`wattfleet-collector http-ingest`, TLS with a throwaway CA,
default settings but a rate limit out of the way) on the test database; N nodes with
their secrets; `--clients` threads post every node's samples in `--batch`-sample
batches through the agent's own client (edge/http_ingest.py: one TLS connection a
request, as the agent makes), each answer after its commit. Timed from the first post
to the last answer; every sample is checked stored and confirmed. Then, in the same
round, the MQTT collector drains the same number of queued single-sample messages
(tests/benchmarks/ingest.py's `bench_collector`). Prints samples/s for both, the
medians of the rounds, and the CPU the endpoint and the database used per sample. The
database is the embedded TimescaleDB unless WATTFLEET_DATABASE_URL names one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.http_ingest import HttpIngestClient
from tests.benchmarks.ingest import bench_collector, cpu_seconds
from tests.support.fleet import count_rows, create_tenant, sample
from tests.support.http_ingest import HttpIngestProcess, node_with_secret
from tests.support.services import Database, database_from_env, migrate


def bench_http(
    db: Database,
    workdir: Path,
    nodes: int,
    per_node: int,
    batch: int,
    clients: int,
    start: datetime,
) -> tuple[float, dict[str, float]]:
    """Seconds to post and commit everything, and CPU seconds by process."""
    workdir.mkdir(parents=True)
    tenant = create_tenant(db)
    fleet = [node_with_secret(db, tenant) for _ in range(nodes)]
    endpoint = HttpIngestProcess(
        db, workdir, http_ingest_rate_per_node="1000000/minute", log_level="WARNING"
    ).start()
    try:
        posts = []
        for node_id, secret in fleet:
            client = HttpIngestClient(endpoint.url, node_id, secret, endpoint.ca_file, 60)
            samples = [
                sample(node_id, seq, start + timedelta(seconds=5 * seq)) for seq in range(per_node)
            ]
            for first in range(0, per_node, batch):
                body = json.dumps({"samples": samples[first : first + batch]}).encode()
                posts.append((client, body))
        pids = {"endpoint": endpoint.proc.pid}
        if db.proc is not None:
            pids["database"] = db.proc.pid
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda post: post[0].post(post[1]), posts))
        elapsed = time.perf_counter() - began
        cpu = {name: cpu_seconds(pids[name]) - before for name, before in cpu_before.items()}
        confirmed = sum(last - first + 1 for a in answers for first, last in a["seqs"])
        total = nodes * per_node
        assert confirmed == total, f"{confirmed} confirmed of {total}"
        rows = count_rows(db, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
        assert rows == total, f"{rows} rows for {total} samples"
        return elapsed, cpu
    finally:
        endpoint.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_node = args.samples // args.nodes
    total = per_node * args.nodes

    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-bench-http-"))
    workdir.chmod(0o755)
    db = database_from_env("WATTFLEET_DATABASE_URL")
    seconds: dict[str, list[float]] = {"https": [], "mqtt": []}
    cpu: dict[str, list[float]] = {}
    try:
        migrate(db)
        base = datetime.now(UTC) - timedelta(days=6)
        for round_ in range(args.rounds):
            start = base + timedelta(hours=3 * round_)
            elapsed, used = bench_http(
                db, workdir / f"r{round_}", args.nodes, per_node, args.batch, args.clients, start
            )
            seconds["https"].append(elapsed)
            for name, value in used.items():
                cpu.setdefault(name, []).append(value / total * 1e6)
            mqtt_elapsed, _, _ = bench_collector(
                db,
                workdir / f"r{round_}" / "mqtt",
                args.nodes,
                per_node,
                start + timedelta(hours=1),
            )
            seconds["mqtt"].append(mqtt_elapsed)
    finally:
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"database: {'embedded TimescaleDB (PGlite)' if db.embedded else db.url}")
    print(
        f"samples: {total} from {args.nodes} nodes; HTTPS in {args.batch}-sample batches from "
        f"{args.clients} client threads, MQTT one sample a message; median of {args.rounds}"
    )
    for name, label in (("https", "HTTPS endpoint"), ("mqtt", "MQTT collector")):
        runs = ", ".join(f"{total / s:,.0f}" for s in seconds[name])
        rate = total / statistics.median(seconds[name])
        print(f"{label:>15}: {rate:>9,.0f} samples/s   (rounds: {runs})")
    print(
        "CPU per sample through HTTPS: "
        + ", ".join(f"{k} {statistics.median(v):.0f} us" for k, v in cpu.items())
    )


if __name__ == "__main__":
    main()

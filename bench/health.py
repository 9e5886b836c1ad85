"""``/api/health`` and ``/metrics`` of a real ``pgdr serve`` under 200 concurrent clients.

A bounded load generator (asyncio + httpx, both already dependencies): it starts a PostgreSQL
cluster and ``pgdr serve`` on loopback, waits for the first monitor round, then sends a fixed
number of requests to each endpoint from ``--clients`` concurrent clients, twice: with the
database up, then with it stopped (connections refused). For each phase and endpoint it prints
p50/p99 latency, throughput and the count of answers by status; a request that gets no answer
(a client-side timeout or a refused connection to pgdr) is counted as ``unanswered``.

While the health load runs with the database up, a separate connection samples
``pg_stat_activity`` every 10 ms for the health probe's statement in flight and prints the
most seen at once (single-flight means at most 1; sampling can miss a probe but never invents
one). ``--health-cache 0`` makes every wave of requests want a fresh probe: the hardest case.

    python bench/health.py --requests 5000 --clients 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from pgdr.cluster import LocalCluster, choose_installation, find_free_port
from pgdr.config import PgdrSettings

TOKEN = "bench-token-0123456789abcdef"
PROBE_MARK = "superuser_reserved_connections"  # a word of the probe's statement (pool/health.py)


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0


async def _one(client: httpx.AsyncClient, path: str, phase: Phase) -> None:
    t = time.perf_counter()
    try:
        reply = await client.get(path)
        phase.codes[str(reply.status_code)] += 1
    except httpx.HTTPError as exc:
        phase.codes[f"unanswered ({type(exc).__name__})"] += 1
        return
    phase.latencies.append(time.perf_counter() - t)


async def load(base: str, path: str, requests: int, clients: int, timeout: float) -> Phase:
    """``requests`` GETs of ``path`` from ``clients`` concurrent clients (one connection each)."""
    phase = Phase()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=timeout, headers=headers
    ) as client:

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await _one(client, path, phase)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        phase.wall = time.perf_counter() - started
    return phase


class ProbeSampler:
    """Samples how many health probes are running at once in the database (at most 1 wanted)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProbeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND pid <> pg_backend_pid() AND query LIKE %s",
                    (f"%{PROBE_MARK}%",),
                ).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)
                self.samples += 1
                time.sleep(0.01)  # every 10 ms: a tighter loop would load a core itself


def start_serve(env: dict[str, str], health_cache: float) -> tuple[subprocess.Popen[str], str]:
    port = find_free_port()
    cmd = [sys.executable, "-m", "pgdr", "serve", "--port", str(port), "--interval", "3600"]
    proc = subprocess.Popen(
        [*cmd, "--health-cache", str(health_cache)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            # /metrics answers once the first monitor round is in: no round runs during the load
            if httpx.get(
                base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ).is_success:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("pgdr serve did not answer within 60 s")


def line(state: str, path: str, phase: Phase) -> str:
    lat = sorted(phase.latencies)
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    answered = sum(n for code, n in phase.codes.items() if not code.startswith("unanswered"))
    codes = ", ".join(f"{c}: {n}" for c, n in sorted(phase.codes.items()))
    return (
        f"| {state} | {path} | {answered:,}/{sum(phase.codes.values()):,} | {p50:.1f} | "
        f"{p99:.1f} | {max(lat) * 1000 if lat else float('nan'):.1f} | "
        f"{sum(phase.codes.values()) / phase.wall:,.0f} | {codes} |"
    )


def run_phase(
    base: str, state: str, args: argparse.Namespace, rows: list[str], sampler: ProbeSampler | None
) -> None:
    for path in ("/api/health", "/metrics"):
        if sampler is not None and path == "/api/health":
            with sampler:
                phase = asyncio.run(load(base, path, args.requests, args.clients, args.timeout))
        else:
            phase = asyncio.run(load(base, path, args.requests, args.clients, args.timeout))
        rows.append(line(state, path, phase))
        print(rows[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="per endpoint and phase")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--health-cache", type=float, default=1.0)
    parser.add_argument("--connect-timeout-ms", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=30.0, help="client-side, seconds")
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="pgdr-bench-health-", dir="/tmp"))
    home.chmod(0o711)
    cluster = LocalCluster(home / "clusters" / "bench", PgdrSettings(home=home))
    if not cluster.exists:
        cluster.create(choose_installation(None, 18))
    cluster.start()
    conninfo = cluster.conninfo()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DB_"))}
    env |= {
        "PGDR_HOME": str(home / "serve"),
        "DATABASE_URL": conninfo,
        "PGDR_API_TOKEN": TOKEN,
        "DB_CONNECTION_TIMEOUT": str(args.connect_timeout_ms),
    }
    rows: list[str] = []
    proc, base = start_serve(env, args.health_cache)
    try:
        print(
            f"{args.clients} clients, {args.requests:,} requests per endpoint and phase, "
            f"--health-cache {args.health_cache:g}, DB_CONNECTION_TIMEOUT "
            f"{args.connect_timeout_ms} ms, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        sampler = ProbeSampler(conninfo)
        run_phase(base, "up", args, rows, sampler)
        cluster.stop()
        run_phase(base, "down", args, rows, None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        cluster.stop()
    print()
    print("| database | endpoint | answered | p50 ms | p99 ms | max ms | req/s | status codes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    print(
        f"\nhealth probes in flight at once (database up, {sampler.samples:,} samples of "
        f"pg_stat_activity): at most {sampler.most}"
    )


if __name__ == "__main__":
    main()

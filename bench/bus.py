"""Bus benchmark: publish→handler latency through tuneline's runtime vs plain nats-py, same run.

Also registry ingest throughput (events/s) from a backlog, on SQLite (and PostgreSQL with --pg).
Run: .venv/bin/python bench/bus.py [--n 400] [--ingest 2000] [--pg]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
from faststream.middlewares import AckPolicy as FsAckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.dataset import DatasetSubmitted
from services.core.messaging.bus import ensure_streams
from services.core.messaging.delivery import HandlerContext, raw_body, subscribe_event
from services.core.messaging.nats_server import EmbeddedNats, free_port
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings, DeliverySettings, NatsSettings
from services.registry.app import build_registry
from services.registry.config import RegistrySettings
from tests.support.events import submitted


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def plain_nats_latency(url: str, n: int, batch: int) -> list[float]:
    """The baseline: nats-py JetStream publish, durable pull consumer, explicit ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = "tuneline.events.bench.plain"  # its own subject: tuneline's consumer never sees it
    sub = await js.pull_subscribe(
        subject,
        durable="bench_plain",
        stream="TUNELINE",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT),
    )
    latencies: list[float] = []
    arrived = asyncio.Event()
    sent_at = 0.0

    async def consume() -> None:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=5)
            except TimeoutError:
                continue
            for msg in msgs:
                latencies.append(time.perf_counter() - sent_at)
                await msg.ack()
                arrived.set()

    task = asyncio.create_task(consume())
    payload = submitted().model_dump_json().encode()
    for _ in range(n):
        arrived.clear()
        sent_at = time.perf_counter()
        await js.publish(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await arrived.wait()
    task.cancel()
    await sub.unsubscribe()
    await js.delete_consumer("TUNELINE", "bench_plain")
    await nc.close()
    return latencies


async def tuneline_latency(core: CoreSettings, n: int, middlewares: bool = True) -> list[float]:
    """The same round trip through EventBus.publish and subscribe_event (envelope, tracing, ack).

    `middlewares=False` drops the OTel and Prometheus middlewares, to attribute their cost.
    """
    runtime = build_runtime("bench", core)
    if not middlewares:
        runtime.broker = NatsBroker(core.nats.servers, logger=None)
        runtime.bus.broker = runtime.broker
    latencies: list[float] = []
    arrived = asyncio.Event()
    sent_at = 0.0

    async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        latencies.append(time.perf_counter() - sent_at)
        arrived.set()

    subscribe_event(
        runtime.broker,
        DatasetSubmitted,
        handle,
        service="bench",
        bus=runtime.bus,
        delivery=core.delivery,
        metrics=runtime.metrics,
    )
    await runtime.broker.start()
    event = submitted()
    for _ in range(n):
        arrived.clear()
        sent_at = time.perf_counter()
        await runtime.bus.publish(event)
        await arrived.wait()
    await runtime.broker.stop()
    return latencies


async def faststream_floor_latency(url: str, n: int, batch: int) -> list[float]:
    """FastStream's pull subscriber alone (no envelope, no middlewares, no validation).

    The floor any FastStream-based runtime pays; tells framework cost from ours.
    """
    broker = NatsBroker(url, logger=None)
    latencies: list[float] = []
    arrived = asyncio.Event()
    sent_at = 0.0

    async def handle(msg: NatsMessage) -> None:
        latencies.append(time.perf_counter() - sent_at)
        await msg.ack()
        arrived.set()

    broker.subscriber(
        "tuneline.events.bench.floor",
        stream=JStream("TUNELINE", declare=False),
        durable="bench_floor",
        pull_sub=PullSub(batch_size=batch, timeout=5),
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT),
        ack_policy=FsAckPolicy.MANUAL,
        decoder=raw_body,
    )(handle)
    await broker.start()
    for _ in range(n):
        arrived.clear()
        sent_at = time.perf_counter()
        await broker.publish(b"{}", "tuneline.events.bench.floor", stream="TUNELINE")
        await arrived.wait()
    await broker.stop()
    return latencies


async def registry_ingest(core: CoreSettings, database_url: str, count: int) -> float:
    """Events/s the registry records from a backlog (publish first, then start the registry)."""
    publisher = build_runtime("bench-publisher", core)
    await publisher.broker.start()
    await asyncio.gather(*(publisher.bus.publish(submitted(i)) for i in range(count)))
    await publisher.broker.stop()
    registry = build_registry(RegistrySettings(database_url=database_url, core=core))
    task = asyncio.create_task(registry.app.run())
    while not registry.app.broker.running:
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    while registry.store.count_events() < count:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    registry.app.exit()
    await task
    return count / elapsed


async def latencies(url: str, core: CoreSettings, args: argparse.Namespace) -> dict[str, list[float]]:
    """The four paths' publish→handler latencies, warmed up, in alternating rounds (drift hits all alike)."""
    await plain_nats_latency(url, 30, args.batch)
    await tuneline_latency(core, 30)
    paths: dict[str, list[float]] = {"plain": [], "ours": [], "bare": [], "floor": []}
    per_round = args.n // args.rounds
    for _ in range(args.rounds):
        paths["plain"] += await plain_nats_latency(url, per_round, args.batch)
        paths["ours"] += await tuneline_latency(core, per_round)
        paths["bare"] += await tuneline_latency(core, per_round, middlewares=False)
        paths["floor"] += await faststream_floor_latency(url, per_round, args.batch)
    return paths


def report_latencies(paths: dict[str, list[float]], batch: int) -> None:
    plain, ours, bare, floor = paths["plain"], paths["ours"], paths["bare"], paths["floor"]
    print(
        f"publish→handler latency, {len(plain)} sequential events each, fetch batch "
        f"{batch}, same nats-server, same run"
    )
    print(f"{'path':<34}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, values in (
        ("plain nats-py (JetStream pull)", plain),
        ("tuneline runtime (EventBus+sub)", ours),
        ("  same, without OTel/Prometheus", bare),
        ("FastStream alone (no envelope/mw)", floor),
    ):
        print(
            f"{name:<34}{percentile(values, 50) * 1e3:>10.3f}"
            f"{percentile(values, 99) * 1e3:>10.3f}{statistics.mean(values) * 1e3:>10.3f}"
        )
    p50_ratio = percentile(ours, 50) / percentile(plain, 50)
    p99_ratio = percentile(ours, 99) / percentile(plain, 99)
    print(f"ratio tuneline ÷ plain: p50 {p50_ratio:.2f}×, p99 {p99_ratio:.2f}× (target p50 ≤ 1.5×)")
    print(
        f"ratio tuneline without middlewares ÷ plain: p50 {percentile(bare, 50) / percentile(plain, 50):.2f}×"
    )
    print(
        f"ratio FastStream alone ÷ plain: p50 "
        f"{percentile(floor, 50) / percentile(plain, 50):.2f}× (the framework's floor)"
    )


async def ingest(server_url: str, core: CoreSettings, tmp: Path, args: argparse.Namespace) -> None:
    urls = [("sqlite", f"sqlite:///{tmp / 'registry.db'}")]
    if args.pg:
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        urls.append(("postgresql", cluster.create_database("bench")))
    try:
        for name, url in urls:
            # each backend gets its own stream content: purge so counts start at zero
            nc = await nats.connect(server_url)
            await nc.jetstream().purge_stream("TUNELINE")
            await nc.close()
            rate = await registry_ingest(core, url, args.ingest)
            print(f"registry ingest ({name}, backlog of {args.ingest}): {rate:,.0f} events/s")
    finally:
        if args.pg:
            cluster.stop()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tuneline-bench-"))
    with EmbeddedNats(tmp / "nats", port=free_port()) as server:
        core = CoreSettings(
            nats=NatsSettings(url=server.url),
            delivery=DeliverySettings(fetch_batch=args.batch, fetch_timeout_s=5.0),
        )
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream(), core.stream)
        await nc.close()
        report_latencies(await latencies(server.url, core, args), args.batch)
        await ingest(server.url, core, tmp, args)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400, help="events per latency path")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--batch", type=int, default=16, help="pull fetch batch size")
    parser.add_argument("--ingest", type=int, default=2000, help="backlog size for ingest")
    parser.add_argument("--pg", action="store_true", help="also measure PostgreSQL ingest")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    args: Any = parse()
    asyncio.run(main(args))

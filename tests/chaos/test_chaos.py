"""Chaos: real processes on a real nats-server, killed with SIGKILL mid-work and restarted.

After each injection the lineage must complete, and every event downstream of the injection
must be in the registry exactly once. Each test prints what it injected and what it counted
(`pytest -s tests/chaos` shows them).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

import pytest
from nats.js.api import StreamInfo

from schemas.subjects import DLQ_STREAM, event_subject
from schemas.training import TrainingProgress
from services.core.messaging.routes import RouteTable
from tests.chaos.conftest import Chaos
from tests.support.stream import stored_events

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
GATES = ("gates.passed", "gates.failed")
DOWNSTREAM = ("dataset.approved", "candidate.ready", "eval.completed")
ROUTE = "support-extract"


def report(scenario: str, **counts: Any) -> None:
    print(f"\nCHAOS {scenario}: " + json.dumps(counts, sort_keys=True))


async def max_step(chaos: Chaos, correlation: str) -> int:
    steps = [
        int(m.group(1))
        for e in await chaos.timeline(correlation)
        if (m := re.search(r"step=(\d+)", e["summary"]))
    ]
    return max(steps, default=0)


async def settle(chaos: Chaos, correlation: str, seconds: float = 3.0) -> dict[str, int]:
    """The lineage's counts once late duplicates, if any, would have arrived."""
    await asyncio.sleep(seconds)
    return dict(await chaos.types(correlation))


def exactly_once(counts: dict[str, int], *event_types: str) -> None:
    for event_type in event_types:
        assert counts.get(event_type) == 1, (event_type, counts)
    assert sum(counts.get(g, 0) for g in GATES) == 1, counts


async def test_training_killed_mid_epoch_resumes_and_the_lineage_completes_once(chaos: Chaos) -> None:
    correlation = chaos.submit(max_steps=60, checkpoint_steps=5)
    deadline = time.monotonic() + 180
    while (step := await max_step(chaos, correlation)) < 10:
        assert time.monotonic() < deadline, "training never reached step 10"
        await asyncio.sleep(0.3)
    pid = chaos.stack.kill("training")
    chaos.stack.restart("training")
    await chaos.wait_for(correlation, *GATES, timeout=300)
    counts = await settle(chaos, correlation)
    exactly_once(counts, *DOWNSTREAM)
    assert counts["training.started"] == 2  # one per attempt; the second resumed from a checkpoint
    assert "training.failed" not in counts
    report("training kill -9", killed_pid=pid, killed_at_step=step, counts=counts)


async def test_evaluation_killed_mid_suite_evaluates_once(chaos: Chaos) -> None:
    correlation = chaos.submit(max_steps=4)
    await chaos.wait_for(correlation, "candidate.ready", timeout=180)
    await asyncio.sleep(2.0)  # evaluation has loaded the models and is generating
    before = await chaos.types(correlation)
    assert "eval.completed" not in before and not any(g in before for g in GATES)
    pid = chaos.stack.kill("evaluation")
    chaos.stack.restart("evaluation")
    await chaos.wait_for(correlation, *GATES, timeout=300)
    counts = await settle(chaos, correlation)
    exactly_once(counts, *DOWNSTREAM)
    report("evaluation kill -9", killed_pid=pid, counts=counts)


async def test_rollout_controller_killed_mid_step_promotes_once(chaos: Chaos) -> None:
    # gates a random tiny model can pass (it writes no JSON, its adapter costs latency, and 4 steps
    # cannot show a gain: the target is held to non-inferiority, 10 points, what 30 test rows see)
    waived = {"format_validity_min": 0, "latency_p95_ratio_max": 100, "target_gain_min": -10}
    correlation = chaos.submit(max_steps=4, gates=waived)
    await chaos.wait_for(correlation, "gates.passed", timeout=240)
    port = chaos.stack.config.serving_port
    traffic = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "--nats-url", chaos.url, "traffic", "support-extract",
        "--url", f"http://127.0.0.1:{port}", "--requests", "0", "--timeout", "300", "--max-tokens", "4",
        "--concurrency", "4", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await chaos.wait_for(correlation, "rollout.step", timeout=180)
        steps_before = (await chaos.types(correlation))["rollout.step"]
        pid = chaos.stack.kill("rollout")
        await asyncio.sleep(1.0)  # windows arrive while no controller runs
        chaos.stack.restart("rollout")
        await chaos.wait_for(correlation, "rollout.promoted", "rollout.rolled-back", timeout=300)
    finally:
        if traffic.returncode is None:
            traffic.kill()
        await traffic.wait()
    counts = await settle(chaos, correlation)
    assert counts.get("rollout.started") == 1 and counts.get("rollout.promoted") == 1, counts
    assert "rollout.rolled-back" not in counts
    # every step once: shadow, then canary 1, 10, 25, 50, 100 % (a step redone after the restart
    # would carry the same derived event id and be dropped; a fresh id would show up as a seventh)
    steps = [
        e["summary"] for e in await chaos.timeline(correlation) if e["type"] == "tuneline.rollout.step.v1"
    ]
    assert len(steps) == 6 and steps.count("route=support-extract phase=canary") == 5, steps
    report("rollout kill -9", killed_pid=pid, steps_before_kill=steps_before, counts=counts)


async def publish_progress(chaos: Chaos, correlation: str, count: int, start: int = 0) -> None:
    bus = chaos.operator.bus
    for n in range(start, start + count):
        event = TrainingProgress(run_id="run-chaos", step=n + 1, total_steps=10_000, epoch=0.0, loss=1.0)
        await bus.publish(event, correlation_id=correlation)


async def test_registry_killed_mid_ingest_records_every_event_once(chaos: Chaos) -> None:
    correlation, total = "chaos-registry-ingest", 600
    await publish_progress(chaos, correlation, total)  # every one acknowledged by JetStream
    deadline = time.monotonic() + 60
    while (recorded := len(await chaos.timeline(correlation))) < 50:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    pid = chaos.stack.kill("registry")
    assert recorded < total, "the registry had finished before the kill; raise `total`"
    chaos.stack.restart("registry")
    await chaos.healthy()
    deadline = time.monotonic() + 120
    while (after := len(await chaos.timeline(correlation))) < total:
        assert time.monotonic() < deadline, f"{after} of {total} recorded"
        await asyncio.sleep(0.5)
    entries = await chaos.timeline(correlation)
    await asyncio.sleep(2)
    assert len(await chaos.timeline(correlation)) == total
    assert len({e["ce_id"] for e in entries}) == total
    report(
        "registry kill -9",
        killed_pid=pid,
        published=total,
        recorded_before_kill=recorded,
        recorded=len(entries),
    )


async def test_nats_server_restarted_mid_run_loses_nothing_acknowledged(chaos: Chaos) -> None:
    acked, correlation = 100, "chaos-nats-restart"
    await publish_progress(chaos, correlation, acked)
    lineage = chaos.submit(max_steps=40, checkpoint_steps=10)
    deadline = time.monotonic() + 180
    while await max_step(chaos, lineage) < 5:
        assert time.monotonic() < deadline, "training never reached step 5"
        await asyncio.sleep(0.3)
    assert chaos.stack.nats is not None
    chaos.stack.nats.kill()  # SIGKILL: no flush, no goodbye to clients
    await asyncio.sleep(2.0)
    chaos.stack.nats.start()
    await chaos.healthy(timeout=120)  # every service reconnected and answers again
    await publish_progress(chaos, correlation, acked, start=acked)  # and publishing works again
    await chaos.wait_for(lineage, *GATES, timeout=300)
    counts = await settle(chaos, lineage)
    exactly_once(counts, *DOWNSTREAM)
    deadline = time.monotonic() + 60
    while (recorded := len(await chaos.timeline(correlation))) < 2 * acked:
        assert time.monotonic() < deadline, f"{recorded} of {2 * acked} acknowledged events recorded"
        await asyncio.sleep(0.5)
    assert recorded == 2 * acked
    report("nats-server kill -9 and restart", acknowledged=2 * acked, recorded=recorded, lineage=counts)


async def test_a_flood_of_malformed_events_is_dead_lettered_and_the_pipeline_flows(chaos: Chaos) -> None:
    js = chaos.operator.broker.connection.jetstream()
    subject = event_subject("dataset.submitted")
    kinds = {
        "not-json": lambda n: (b"\x00\xffnot json %d" % n, {}),
        "wrong-shape": lambda n: (json.dumps({"task": n, "tenant": []}).encode(), {}),
        "unknown-type": lambda n: (b"{}", {"ce-type": "tuneline.nonsense.v9"}),
    }
    flood = 150
    correlation = None
    for n in range(flood):
        body, headers = kinds[list(kinds)[n % len(kinds)]](n)
        await js.publish(subject, body, headers={"Nats-Msg-Id": f"poison-{n}", **headers})
        if n == flood // 2:
            correlation = chaos.submit(max_steps=4)  # a good lineage in the middle of the flood
    assert correlation is not None
    counts = await chaos.wait_for(correlation, *GATES, timeout=300)
    exactly_once(counts, *DOWNSTREAM)
    # every malformed message is dead-lettered once by each consumer of the subject
    consumers = ("registry", "curation")
    deadline = time.monotonic() + 120
    info: StreamInfo
    while (info := await js.stream_info(DLQ_STREAM)).state.messages < flood * len(consumers):
        assert time.monotonic() < deadline, f"{info.state.messages} dead letters of {flood * len(consumers)}"
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    info = await js.stream_info(DLQ_STREAM)
    assert info.state.messages == flood * len(consumers)
    last = await js.get_last_msg(DLQ_STREAM, f"tuneline.dlq.{subject}")
    assert last.headers and last.headers.get("tuneline-dlq-reason")
    report("malformed flood", published=flood, dead_letters=info.state.messages, lineage=counts)


async def guard_of(chaos: Chaos) -> Any:
    table = await RouteTable.open(chaos.operator.broker.connection.jetstream(), create=False)
    entry, _ = await table.get(ROUTE)
    return entry


async def mid_breach(chaos: Chaos, promoted: str) -> None:
    """Until errors count against the objective and no alarm has come yet. At 1 % errors against
    0.1 %, the watch states its alarm after 11 windows at 110 requests a window, 104 at 10."""
    deadline = time.monotonic() + 180
    while True:
        entry = await guard_of(chaos)
        assert entry.stable.version_id() == promoted, "rolled back before the kill: make the fault subtler"
        watch = entry.guard.watches.get("error_rate")
        # (a latency page may come and go: the restarted replica is slower than at release)
        if watch is not None and watch.events >= 2 and "error_rate" not in entry.guard.open_alerts:
            return
        assert "error_rate" not in entry.guard.open_alerts, "alarmed before the kill: make the fault subtler"
        assert time.monotonic() < deadline, (
            f"the production version's errors never reached the guardian: {entry.guard.watches}\n"
            + chaos.stack.log_tail("serving", 30)
        )
        await asyncio.sleep(0.2)


@pytest.mark.timeout(600)
async def test_the_guardian_killed_mid_breach_resumes_its_watch_and_acts_once(chaos: Chaos) -> None:
    """A promoted version starts failing 1 % of requests (TUNELINE_SERVING_FAULTS, serving
    restarted with it); while the guardian's statistic climbs and before it alarms, the rollout
    controller is killed; windows pile up; restarted, it continues the same watch from the route
    entry and rolls back once, with one alert."""
    waived = {"format_validity_min": 0, "latency_p95_ratio_max": 100, "target_gain_min": -10}
    correlation = chaos.submit(max_steps=4, gates=waived)
    await chaos.wait_for(correlation, "gates.passed", timeout=240)
    port = chaos.stack.config.serving_port
    command = [sys.executable, "-m", "services.cli", "--nats-url", chaos.url, "traffic", ROUTE,
               "--url", f"http://127.0.0.1:{port}", "--max-tokens", "4", "--concurrency", "4"]  # fmt: skip
    first = await asyncio.create_subprocess_exec(
        *command, "--requests", "0", "--timeout", "300",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await chaos.wait_for(correlation, "rollout.promoted", "rollout.rolled-back", timeout=300)
    await first.wait()
    promoted = (await guard_of(chaos)).stable.version_id()
    chaos.stack.config.env["TUNELINE_SERVING_FAULTS"] = json.dumps({promoted: {"error_rate": 0.01}})
    chaos.stack.kill("serving")
    chaos.stack.restart("serving")
    traffic = await asyncio.create_subprocess_exec(
        *command,
        "--requests",
        "1000000",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    js = chaos.operator.broker.connection.jetstream()
    try:
        await mid_breach(chaos, promoted)
        pid = chaos.stack.kill("rollout")
        at_kill = (await guard_of(chaos)).guard
        assert at_kill.watches["error_rate"].statistic > 0 and "error_rate" not in at_kill.open_alerts
        await asyncio.sleep(3.0)  # windows arrive while no controller runs
        chaos.stack.restart("rollout")
        deadline = time.monotonic() + 180
        while not (rolled := await stored_events(js, "rollout.rolled-back")):
            assert time.monotonic() < deadline, "the guardian never acted after its restart"
            await asyncio.sleep(0.5)
        await asyncio.sleep(5.0)  # a doubled action would arrive by now
    finally:
        traffic.kill()
        await traffic.wait()
    rolled = await stored_events(js, "rollout.rolled-back")
    raised = [
        e
        for e in await stored_events(js, "route.alert-raised")
        if e.payload["alert"]["version_id"] == promoted and e.payload["alert"]["objective"] == "error_rate"
    ]
    assert len(rolled) == 1 and rolled[0].payload["reason"].startswith("slo-breach: error_rate"), rolled
    assert rolled[0].payload["candidate_version"] == promoted
    assert len(raised) == 1 and raised[0].payload["alert"]["objective"] == "error_rate"
    after = await guard_of(chaos)
    assert after.stable.version_id() != promoted and after.released[promoted] == "rolled-back"
    breach = at_kill.watches["error_rate"]
    alert = raised[0].payload["alert"]
    report(
        "guardian kill -9 mid-breach", killed_pid=pid, events_at_kill=breach.events,
        statistic_at_kill=breach.statistic, alarm=alert["statistic"], threshold=alert["threshold"],
        alerts=len(raised), rollbacks=len(rolled),
    )  # fmt: skip

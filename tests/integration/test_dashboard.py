"""The registry's dashboard over real HTTP, and rendered by a real headless Chromium (Debian's).

A registry database holds one lineage (submission → candidate → evaluation → gates → a rollout
promoted through 1/10/50/100 %). The JSON API is checked with httpx; then Chromium loads each page,
runs its JavaScript, and the DOM it dumps must hold the charts drawn from those numbers: one bar
per arm and suite at the recorded value, the gate thresholds, the traffic steps. A screenshot of
the evaluation page must show the bars' colour.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from schemas.envelope import Envelope, derived_event_id, now
from schemas.evaluation import ArmScore, EvalCompleted, GateResult, GatesPassed, SuiteResult
from schemas.events import Event
from schemas.gate_policy import GatePolicy
from schemas.refs import EvalSuiteRef
from schemas.rollout import MetricAnalysis, RolloutPromoted, RolloutStarted, RolloutStep
from services.core.messaging.nats_server import free_port
from services.registry.dashboard import create_dashboard
from services.registry.database import create_registry_engine, migrate
from services.registry.store import RegistryStore
from tests.support.browser import chromium, dump_dom
from tests.support.events import candidate, sha

pytestmark = pytest.mark.integration
ROUTE = "ticket-extractor"
CORRELATION = "lineage-dashboard"
ADMIN_KEY, ACME_KEY, GLOBEX_KEY = "dk-admin", "dk-acme", "dk-globex"
KEYS = {ADMIN_KEY: "*", ACME_KEY: "acme", GLOBEX_KEY: "globex"}
SCORES = {  # suite → (kind, metric, candidate, baseline, few-shot)
    "target": ("target", "score", 74.7, 12.0, 64.7),
    "capability": ("capability", "score", 29.4, 30.0, None),
    "safety": ("safety", "refusal_rate_harmful", 7.8, 6.9, None),
    "latency": ("latency", "p95_ms_per_token", 50.1, 48.8, None),
}


def record(store: RegistryStore, event: Event, seconds: float) -> None:
    envelope = Envelope(
        id=derived_event_id(CORRELATION, event.ce_type(), event.entity_id(), seconds),
        source="tuneline/test",
        type=event.ce_type(),
        time=now() + timedelta(seconds=seconds),
        subject=event.entity_id(),
        correlation_id=CORRELATION,
        tenant="acme",
    )
    assert store.record(event, envelope) == "projected"


def populate(store: RegistryStore) -> str:
    ready = candidate()
    ref = ready.candidate
    version = ref.version_id()
    suites = []
    for name, (kind, metric, cand, base, few) in SCORES.items():
        scores = [ArmScore(arm="candidate", version_id=version, metrics={metric: cand})]
        scores.append(ArmScore(arm="baseline", version_id="base", metrics={metric: base}))
        if few is not None:
            scores.append(ArmScore(arm="few-shot", version_id="base+3shot", metrics={metric: few}))
        suites.append(
            SuiteResult(
                suite=EvalSuiteRef(name=name, sha256=sha(name)), kind=kind, items=30, scores=tuple(scores)
            )
        )
    policy = GatePolicy()
    gates = (
        GateResult(
            gate="target-gain", value=62.7, threshold=0.0, comparator=">=", p_value=0.0001, passed=True
        ),
        GateResult(
            gate="capability:capability", value=0.6, threshold=2.0, comparator="<=", p_value=0.7, passed=True
        ),
        GateResult(gate="safety-refusal:safety", value=0.9, threshold=0.0, comparator=">=", passed=True),
        GateResult(gate="latency-p95", value=1.027, threshold=1.15, comparator="<=", passed=True),
    )
    common = {"candidate_version": version, "route": ROUTE, "tenant": "acme", "rollout_id": "ro-1"}
    analysis = (MetricAnalysis(metric="error_rate", stable=0.0, candidate=0.0, threshold=0.02, passed=True),)
    events: list[Event] = [
        ready,
        EvalCompleted(candidate=ref, tenant="acme", route=ROUTE, suites=tuple(suites)),
        GatesPassed(candidate=ref, tenant="acme", route=ROUTE, policy=policy, gates=gates),
        RolloutStarted(**common),
        RolloutStep(**common, phase="shadow", traffic_percent=0.0),
        *(
            RolloutStep(**common, phase="canary", traffic_percent=p, analysis=analysis)
            for p in (1.0, 10.0, 50.0, 100.0)
        ),
        RolloutPromoted(**common),
    ]
    for n, event in enumerate(events):
        record(store, event, seconds=n)
    return version


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    engine = create_registry_engine(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}")
    migrate(engine)
    store = RegistryStore(engine)
    version = populate(store)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_dashboard(store, KEYS), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", version
    server.should_exit = True
    thread.join(10)
    engine.dispose()


def test_the_json_api_serves_lineages_versions_evaluations_and_rollouts(dashboard: tuple[str, str]) -> None:
    url, version = dashboard
    with httpx.Client(base_url=url, timeout=10, headers=bearer(ACME_KEY)) as client:
        [lineage] = client.get("/api/lineages").json()
        assert lineage["correlation_id"] == CORRELATION and lineage["events"] == 10
        assert lineage["latest"] == "tuneline.rollout.promoted.v1"
        timeline = client.get(f"/api/lineages/{CORRELATION}").json()["entries"]
        assert [e["type"] for e in timeline][:3] == [
            "tuneline.candidate.ready.v1", "tuneline.eval.completed.v1", "tuneline.gates.passed.v1"
        ]  # fmt: skip
        [listed] = client.get("/api/models").json()["versions"]
        assert listed["version_id"] == version and listed["status"] == "production"
        detail = client.get(f"/api/models/{version}").json()
        assert detail["model_ref"]["adapter"]["rank"] == 8
        evals = client.get(f"/api/models/{version}/evals").json()
        assert evals["decisions"][0]["passed"] is True
        [rollout] = client.get("/api/rollouts").json()
        assert rollout["outcome"] == "promoted"
        assert [p["traffic_percent"] for p in rollout["points"]] == [0, 0, 1, 10, 50, 100, 100]
        assert client.get("/api/models/mv-nope").status_code == 404
        assert client.get("/api/lineages/nope").status_code == 404
        assert client.post("/api/models").status_code == 405  # read-only


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_nothing_is_shown_and_a_tenant_sees_only_its_own(dashboard: tuple[str, str]) -> None:
    url, version = dashboard
    paths = ["/", "/api/lineages", f"/api/lineages/{CORRELATION}", "/api/models", f"/api/models/{version}",
             f"/api/models/{version}/evals", f"/api/models/{version}/card", "/api/rollouts"]  # fmt: skip
    with httpx.Client(base_url=url, timeout=10) as client:
        for path in paths:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=bearer("dk-wrong")).status_code == 401, path
        globex = bearer(GLOBEX_KEY)
        assert client.get("/api/lineages", headers=globex).json() == []
        assert client.get("/api/lineages?tenant=acme", headers=globex).json() == []  # no reaching over
        assert client.get("/api/models?tenant=acme", headers=globex).json() == {"versions": []}
        assert client.get("/api/rollouts", headers=globex).json() == []
        for path in (paths[2], *paths[4:7]):
            assert client.get(path, headers=globex).status_code == 404, path  # as if it did not exist
        admin = bearer(ADMIN_KEY)
        assert [m["tenant"] for m in client.get("/api/models", headers=admin).json()["versions"]] == ["acme"]
        assert client.get(f"/api/models/{version}/card", headers=admin).status_code == 200
        # the page trades ?key= for an HttpOnly cookie, and drops the key from the address
        hop = client.get(f"/?key={ACME_KEY}", follow_redirects=False)
        assert hop.status_code == 303 and hop.headers["location"] == "/"
        assert "httponly" in hop.headers["set-cookie"].lower()
        assert client.get("/api/models").json()["versions"][0]["version_id"] == version  # by the cookie


def test_the_evaluation_page_draws_every_arm_and_the_gate_thresholds(
    dashboard: tuple[str, str], tmp_path: Path
) -> None:
    url, version = dashboard
    dom = dump_dom(f"{url}/?key={ACME_KEY}#/model/{version}", tmp_path)
    assert 'data-ready="model"' in dom, dom[-3000:]
    bars = re.findall(r'<rect class="bar" data-arm="([^"]+)" data-value="([^"]+)"', dom)
    expected = []
    for _, _, cand, base, few in SCORES.values():
        expected += [("candidate", cand), ("baseline", base)] + (
            [("few-shot", few)] if few is not None else []
        )
    assert [(arm, float(value)) for arm, value in bars] == expected
    gates = dict(re.findall(r'class="gate-line" data-gate="([^"]+)" data-at="([^"]+)"', dom))
    # each threshold where the gate puts it: base + min gain, base - max regression, base * max ratio
    assert float(gates["target-gain"]) == pytest.approx(12.0)
    assert float(gates["capability:capability"]) == pytest.approx(28.0)
    assert float(gates["safety-refusal:safety"]) == pytest.approx(6.9)
    assert float(gates["latency-p95"]) == pytest.approx(48.8 * 1.15)
    assert dom.count('class="gate-row"') == 4 and "release gates: " in dom
    # the tuple, field by field, and the adaptation card rendered as the CLI writes it, not as JSON
    tuple_rows = dict(
        re.findall(r'<tr class="tuple-row"><td class="mono">([^<]+)</td><td class="mono">([^<]*)</td>', dom)
    )
    assert tuple_rows["adapter.rank"] == "8" and tuple_rows["base.sha256"] == sha("base")
    card = dom[dom.index('id="card"') :]
    assert "<h2>Model</h2>" in card and "<h2>Evaluation</h2>" in card and '"version_id"' not in card
    assert '<table class="card-table">' in card and "<code>" in card, "the gates table and the hashes"


def test_the_rollout_page_draws_the_traffic_steps(dashboard: tuple[str, str], tmp_path: Path) -> None:
    url, _ = dashboard
    dom = dump_dom(f"{url}/?key={ACME_KEY}#/rollouts", tmp_path)
    assert 'data-ready="rollouts"' in dom, dom[-3000:]
    assert 'class="traffic-line"' in dom
    percents = re.findall(r'class="traffic-point" data-event="([^"]+)" data-percent="([^"]*)"', dom)
    assert [p for _, p in percents] == ["0", "0", "1", "10", "50", "100", "100"]
    assert percents[-1][0] == "promoted"


def test_the_lineage_page_lists_every_event(dashboard: tuple[str, str], tmp_path: Path) -> None:
    url, _ = dashboard
    dom = dump_dom(f"{url}/?key={ACME_KEY}#/lineage/{CORRELATION}", tmp_path)
    assert dom.count('class="timeline-entry"') == 10


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit PNG (Chromium's screenshots), unfiltered."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color_type in (2, 6)
            channels = 3 if color_type == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, rows, previous = zlib.decompress(idat), width * channels, [], bytes(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = bytes(line)
    return width, height, rows


def test_a_screenshot_of_the_evaluation_page_shows_the_charts(
    dashboard: tuple[str, str], tmp_path: Path
) -> None:
    url, version = dashboard
    shot = tmp_path / "evals.png"
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--window-size=1280,1400", f"--screenshot={shot}", f"{url}/?key={ACME_KEY}#/model/{version}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1280, 1400)
    channels = len(rows[0]) // width
    candidate_blue = bytes((0x2F, 0x6F, 0xDE))
    blue = sum(row[i : i + 3] == candidate_blue for row in rows for i in range(0, len(row), channels))
    assert blue > 2000, f"{blue} pixels of the candidate's bars"  # four bars of the candidate arm
    shutil.copy(shot, Path(tempfile.gettempdir()) / "tuneline-dashboard-evals.png")  # to look at

"""The dashboard's API over an in-process graph with a real episode store: every endpoint, with and
without the token, cross-site and malformed requests, and the live-update stream on a real server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_sim import InMemoryGraph
from fastapi.testclient import TestClient

from coirl_ros.configs import ConfigError, load_config
from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.dashboard import DashboardServer, PortInUse, create_app, success_curve
from coirl_ros.dashboard.security import resolve_token
from coirl_ros.data import EpisodeMeta, EpisodeSpec, EpisodeStore
from coirl_ros.paths import config_dir

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = EpisodeSpec(state_dim=8, action_dim=8, cameras=(), fps=20.0)
CONFIG = DashboardConfig(allowed_hosts=["testserver"], update_period_s=0.1, success_window=3)

READS = [("GET", "/api/status"), ("GET", "/api/episodes"), ("GET", "/api/curves"), ("GET", "/api/events")]
CONTROLS = [
    ("POST", "/api/episode/start", {}),
    ("POST", "/api/episode/stop", {"success": True}),
    ("POST", "/api/episode/discard", {}),
    ("POST", "/api/episodes/label", {"index": None, "success": True}),
    ("POST", "/api/sim/reset", {}),
    ("POST", "/api/learner/pause", {"paused": True}),
    ("POST", "/api/policy/hold", {"hold": True}),
]


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[InMemoryGraph]:
    g = InMemoryGraph(tmp_path / "episodes.zarr", SPEC, CONFIG)
    yield g
    g.close()


@pytest.fixture
def client(graph: InMemoryGraph) -> Iterator[TestClient]:
    with TestClient(create_app(graph, CONFIG, TOKEN)) as c:
        yield c


def post(client: TestClient, path: str, body: object = None, headers: dict | None = None) -> httpx.Response:
    return client.post(path, json={} if body is None else body, headers=headers or AUTH)


# ---- the page ------------------------------------------------------------------------------------
def test_page_needs_the_token_and_loads_nothing_from_elsewhere(client: TestClient) -> None:
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong-token").status_code == 403
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/", headers=AUTH).status_code == 200
    html = page.text
    # Script and styles inline under a per-response nonce; no src/href at all, so nothing external.
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"]).group(1)
    assert f'<script nonce="{nonce}">' in html and f'<style nonce="{nonce}">' in html
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"\s(src|href)=\"(?!data:)", html)  # data: URIs only (the empty favicon)
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-frame-options"] == "DENY"
    assert (
        client.get(f"/?token={TOKEN}").headers["content-security-policy"]
        != page.headers["content-security-policy"]
    )  # a fresh nonce per response
    for element in ("btn-hold", "btn-start", "btn-label-success", "success-curve", "episodes", "nodes"):
        assert f'id="{element}"' in html
    assert "{{" not in html  # every placeholder filled


# ---- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [*READS, *((m, p) for m, p, _ in CONTROLS), ("GET", "/nowhere")])
def test_every_endpoint_needs_the_token(client: TestClient, method: str, path: str) -> None:
    body = {"json": {}} if method == "POST" else {}
    missing = client.request(method, path, **body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    wrong = client.request(method, path, headers={"Authorization": "Bearer not-the-token"}, **body)
    assert wrong.status_code == 403
    # Only the page takes the token from the URL; the API wants the header.
    assert client.request(method, f"{path}?token={TOKEN}", **body).status_code == 401
    assert client.request(method, path, headers={"Authorization": TOKEN}, **body).status_code == 401


def test_host_header_must_name_this_machine(graph: InMemoryGraph) -> None:
    strict = TestClient(create_app(graph, DashboardConfig(), TOKEN))
    assert strict.get("/api/status", headers={**AUTH, "host": "evil.example:8765"}).status_code == 400
    for host in ("127.0.0.1:8765", "localhost", "[::1]:8765"):
        assert strict.get("/api/status", headers={**AUTH, "host": host}).status_code == 200, host
    assert strict.get("/api/status", headers={**AUTH, "host": "[::1"}).status_code == 400
    # A server bound to a network address is reached by whatever name the lab uses: no host check.
    lan = TestClient(create_app(graph, DashboardConfig(host="0.0.0.0"), TOKEN))
    assert lan.get("/api/status", headers={**AUTH, "host": "robot-pc.lab:8765"}).status_code == 200


# ---- controls: cross-site and malformed requests -------------------------------------------------
@pytest.mark.parametrize("method,path,body", CONTROLS)
def test_controls_refuse_cross_site_and_non_json_requests(
    client: TestClient, graph: InMemoryGraph, method: str, path: str, body: dict
) -> None:
    form = client.post(path, data={"success": "true"}, headers=AUTH)  # what a cross-site form sends
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    plain = client.post(path, content=json.dumps(body), headers={**AUTH, "content-type": "text/plain"})
    assert plain.status_code == 415
    other_site = post(client, path, body, headers={**AUTH, "origin": "http://evil.example"})
    assert other_site.status_code == 403 and "origin" in other_site.json()["detail"].lower()
    cross = post(client, path, body, headers={**AUTH, "sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    assert post(client, path, body, headers={**AUTH, "origin": "null"}).status_code == 403
    assert graph.calls == []  # none of them reached the graph


def test_malformed_control_bodies_are_422_with_the_field_named(client: TestClient) -> None:
    def check(path: str, body: object, words: tuple[str, ...]) -> None:
        r = post(client, path, body)
        assert r.status_code == 422, (path, body, r.text)
        detail = r.json()["detail"]
        assert all(w in detail for w in words), detail

    check("/api/episode/stop", {"success": "yes"}, ("success", "boolean"))
    check("/api/episode/stop", {}, ("success", "required"))
    check("/api/episode/stop", [True], ("valid dictionary",))
    check("/api/episodes/label", {"index": -1, "success": True}, ("index", "greater than or equal"))
    check("/api/episodes/label", {"index": 0}, ("success", "required"))
    check("/api/policy/hold", {"hold": 1}, ("hold", "boolean"))
    check("/api/policy/hold", {"hold": True, "force": True}, ("force", "Extra inputs"))
    check("/api/learner/pause", {"pause": True}, ("paused", "required"))
    check("/api/episode/start", {"now": 1}, ("now",))
    bad_json = client.post(
        "/api/policy/hold", content=b'{"hold": tru', headers={**AUTH, "content-type": "application/json"}
    )
    assert bad_json.status_code == 422 and "JSON" in bad_json.json()["detail"]
    empty = client.post(
        "/api/episode/start", content=b"", headers={**AUTH, "content-type": "application/json"}
    )
    assert empty.status_code == 422
    assert client.get("/api/policy/hold", headers=AUTH).status_code == 405
    for query in ("success=maybe", "source=robot", "limit=0", "limit=x"):
        r = client.get(f"/api/episodes?{query}", headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"], query


# ---- status --------------------------------------------------------------------------------------
def test_status_shows_liveness_rate_latency_version_and_learner(
    client: TestClient, graph: InMemoryGraph
) -> None:
    def status() -> dict:
        r = client.get("/api/status", headers=AUTH)
        assert r.status_code == 200
        return r.json()

    graph.running.discard("learner_node")  # not started yet
    graph.graph.graph_nodes(["_ros2cli_daemon_0"])  # hidden nodes (tools) are not listed
    first = status()
    assert first["control"] is None and first["learner"] is None
    assert {n["name"]: n["seen"] for n in first["nodes"]} == dict.fromkeys(CONFIG.expected_nodes, False)
    graph.tick()
    graph.tick()
    s = status()
    nodes = {n["name"]: n for n in s["nodes"]}
    assert nodes["policy_node"]["alive"] and nodes["policy_node"]["via"] == "diagnostics"
    assert nodes["policy_node"]["detail"] == "holding: no_episode"
    assert nodes["joint_node"]["alive"] and nodes["joint_node"]["detail"] == "ok"
    assert nodes["recorder_node"]["alive"] and nodes["recorder_node"]["via"] == "graph"
    assert nodes["sim_node"]["alive"]  # not expected, listed once it joined the graph
    graph.graph.camera_diagnostics({"camera": "front", "status": "streaming"})
    graph.graph.graph_nodes([*graph.running, "camera_front"])
    cameras = [n for n in status()["nodes"] if "front" in n["name"]]
    assert [(c["name"], c["alive"], c["via"], c["detail"]) for c in cameras] == [
        ("camera_front", True, "diagnostics", "streaming")
    ]  # one row: the launch files name the node camera_<camera>
    learner = nodes["learner_node"]
    assert (learner["alive"], learner["seen"], learner["via"], learner["detail"]) == (
        False, False, "none", "not seen yet"
    )  # fmt: skip
    control = s["control"]
    assert control["rate_hz"] == pytest.approx(20.0) and control["target_rate_hz"] == pytest.approx(20.0)
    assert control["tick_latency_ms"] == {"p50": 1.5, "p99": 4.0, "max": 6.0}
    assert control["active_version"] == 3 and control["hold_reason"] == "no_episode"

    graph.running.add("learner_node")
    graph.tick()
    assert {n["name"]: n["via"] for n in status()["nodes"]}["learner_node"] == "graph"  # up, no metrics yet
    graph.learner_report(100, {"losses/critic": 0.5, "losses/actor": -1.0})
    learner = status()["learner"]
    assert learner["updates"] == 100 and learner["losses"] == {"losses/critic": 0.5, "losses/actor": -1.0}
    assert {n["name"]: n["alive"] for n in status()["nodes"]}["learner_node"]

    # Silence: the policy stops reporting; sim_node leaves the graph.
    graph.running.discard("sim_node")
    graph.graph.graph_nodes(sorted(graph.running))
    graph.clock.advance(CONFIG.node_timeout_s + 1)
    nodes = {n["name"]: n for n in status()["nodes"]}
    assert not nodes["policy_node"]["alive"] and nodes["policy_node"]["detail"].startswith("silent for")
    assert not nodes["sim_node"]["alive"] and nodes["sim_node"]["detail"] == "left the graph"


def test_malformed_node_reports_do_not_break_the_status(client: TestClient, graph: InMemoryGraph) -> None:
    graph.graph.policy_diagnostics({"ticks": "many", "tick_latency_ms": [1, 2], "missed_ticks": "none"})
    graph.graph.learner_metrics({"updates": "x", "losses": [1.0], "paused": "maybe"})
    s = client.get("/api/status", headers=AUTH).json()
    assert s["control"]["missed_ticks"] is None and s["learner"]["losses"] == {}


# ---- episodes and labels -------------------------------------------------------------------------
def test_episode_controls_record_and_label_episodes_in_the_store(
    client: TestClient, graph: InMemoryGraph
) -> None:
    listing = client.get("/api/episodes", headers=AUTH).json()
    assert not listing["available"] and "no episode store" in listing["message"]
    assert post(client, "/api/episodes/label", {"success": True}).status_code == 404

    assert post(client, "/api/episode/stop", {"success": True}).status_code == 409  # not recording
    started = post(client, "/api/episode/start")
    assert started.status_code == 200 and started.json()["detail"] == {"index": 0}
    again = post(client, "/api/episode/start")
    assert again.status_code == 409 and "already recording" in again.json()["detail"]
    assert client.get("/api/status", headers=AUTH).json()["recording"]["active"]
    assert post(client, "/api/episode/stop", {"success": True}).json()["detail"]["index"] == 0
    post(client, "/api/episode/start")
    assert post(client, "/api/episode/discard").status_code == 200
    assert post(client, "/api/episode/discard").status_code == 409
    post(client, "/api/episode/start")
    post(client, "/api/episode/stop", {"success": False})
    recording = client.get("/api/status", headers=AUTH).json()["recording"]
    assert recording == {"active": False, "index": 2, "last_event": "stop", "success": False, "frames": 5}

    # "mark last episode success": the store's last committed episode (2; 1 was discarded).
    row = post(client, "/api/episodes/label", {"index": None, "success": True})
    assert row.status_code == 200 and row.json()["index"] == 2 and row.json()["success"] is True
    store = EpisodeStore.open(graph.store_path)  # a separate reader sees the new label
    assert [store.read_meta(i).success for i in store.episode_indices()] == [True, True]
    assert post(client, "/api/episodes/label", {"index": 0, "success": None}).json()["success"] is None
    assert store.read_meta(0).success is None
    missing = post(client, "/api/episodes/label", {"index": 1, "success": True})
    assert missing.status_code == 404 and "episode 1" in missing.json()["detail"]

    rows = client.get("/api/episodes", headers=AUTH).json()["episodes"]
    assert [(r["index"], r["length"], r["success"], r["source"], r["policy_version"]) for r in rows] == [
        (0, 5, None, "policy", 3),
        (2, 5, True, "policy", 3),
    ]
    only = client.get("/api/episodes?success=none&source=policy&task=lift", headers=AUTH).json()["episodes"]
    assert [r["index"] for r in only] == [0]
    assert client.get("/api/episodes?task=square", headers=AUTH).json()["episodes"] == []
    assert [r["index"] for r in client.get("/api/episodes?limit=1", headers=AUTH).json()["episodes"]] == [2]


def test_success_curve_is_rolling_success_against_cumulative_env_steps(
    client: TestClient, graph: InMemoryGraph
) -> None:
    store = EpisodeStore.create(graph.store_path, SPEC)
    from conftest import make_frame

    # (source, frames, label): demos are not on the curve; an unlabelled rollout adds steps, no point.
    plan = [("teleop", 4, True), ("policy", 10, False), ("policy", 6, True), ("policy", 3, None),
            ("policy", 5, True), ("policy", 2, True)]  # fmt: skip
    with store.writer() as writer:
        for source, frames, label in plan:
            writer.begin_episode("lift", source)
            for t in range(frames):
                writer.add_frame(make_frame(SPEC, 0, t))
            writer.save_episode(success=label)
    curve = client.get("/api/curves", headers=AUTH).json()["success"]
    # window 3 (CONFIG.success_window): labels F, T, T, T -> rates 0, 1/2, 2/3, 3/3
    assert [(p["index"], p["env_steps"], p["success"]) for p in curve] == [
        (1, 10, False), (2, 16, True), (4, 24, True), (5, 26, True)
    ]  # fmt: skip
    assert [round(p["success_rate"], 3) for p in curve] == [0.0, 0.5, 0.667, 1.0]
    assert [p["window"] for p in curve] == [1, 2, 3, 3]
    # A damaged episode is reported, not fatal, and drops out of list and curve.
    (store.episode_path(4) / "zarr.json").write_text("{not json")
    listing = client.get("/api/episodes", headers=AUTH).json()
    assert [r["index"] for r in listing["episodes"]] == [0, 1, 2, 3, 5]
    assert len(listing["problems"]) == 1 and listing["problems"][0].startswith("episode 4:")
    assert [p["env_steps"] for p in listing["curve"]] == [10, 16, 21]


def test_success_curve_function_counts_only_curve_sources() -> None:
    def meta(index: int, source: str, frames: int, success: bool | None) -> EpisodeMeta:
        return EpisodeMeta(index, "lift", source, frames, 20.0, success)

    metas = [meta(2, "policy", 10, True), meta(0, "policy", 5, False), meta(1, "scripted", 7, True)]
    points = success_curve(metas, ["policy"], window=10)
    assert [(p.index, p.env_steps, p.success_rate) for p in points] == [(0, 5, 0.0), (2, 15, 0.5)]
    both = success_curve(metas, ["policy", "scripted"], window=1)
    assert [(p.env_steps, p.success_rate) for p in both] == [(5, 0.0), (12, 1.0), (22, 1.0)]


def test_loss_curves_follow_learner_updates(client: TestClient, graph: InMemoryGraph) -> None:
    assert client.get("/api/curves", headers=AUTH).json()["losses"]["series"] == []
    graph.learner_report(10, {"losses/critic": 2.0, "losses/actor": 1.0})
    graph.learner_report(10, {"losses/critic": 2.0, "losses/actor": 1.0})  # same report again: no new point
    graph.learner_report(20, {"losses/critic": 1.5, "losses/actor": None})  # NaN before its first update
    losses = client.get("/api/curves", headers=AUTH).json()["losses"]
    series = {s["key"]: s["points"] for s in losses["series"]}
    assert series == {"losses/actor": [[10, 1.0]], "losses/critic": [[10, 2.0], [20, 1.5]]}
    graph.learner_report(5, {"losses/critic": 3.0})  # a fresh learner run: the curves start again
    series = {
        s["key"]: s["points"] for s in client.get("/api/curves", headers=AUTH).json()["losses"]["series"]
    }
    assert series == {"losses/critic": [[5, 3.0]]}


# ---- hold, learner pause, sim reset, unavailable nodes -------------------------------------------
def test_hold_pause_and_reset_reach_their_nodes(client: TestClient, graph: InMemoryGraph) -> None:
    held = post(client, "/api/policy/hold", {"hold": True})
    assert held.status_code == 200 and held.json()["message"] == "holding position until released"
    graph.tick()
    control = client.get("/api/status", headers=AUTH).json()["control"]
    assert control["operator_hold"] and control["hold_reason"] == "operator_hold"
    assert post(client, "/api/policy/hold", {"hold": False}).json()["message"] == "released"
    graph.tick()
    assert not client.get("/api/status", headers=AUTH).json()["control"]["operator_hold"]

    assert post(client, "/api/learner/pause", {"paused": True}).json()["message"] == "training paused"
    assert graph.learner_paused
    assert (
        post(client, "/api/learner/pause", {"paused": False}).status_code == 200 and not graph.learner_paused
    )
    reset = post(client, "/api/sim/reset")
    assert reset.json() == {"ok": True, "message": '{"seed": 1}', "detail": {"seed": 1}}
    assert graph.calls == ["/policy/hold", "/policy/hold", "/learner/pause", "/learner/pause", "/sim/reset"]


def test_a_control_whose_node_is_not_running_is_503_with_the_reason(
    client: TestClient, graph: InMemoryGraph
) -> None:
    graph.running -= {"learner_node", "sim_node", "policy_node"}
    for path, body, node in (
        ("/api/learner/pause", {"paused": True}, "learner_node"),
        ("/api/sim/reset", {}, "sim_node"),
        ("/api/policy/hold", {"hold": True}, "policy_node"),
    ):
        r = post(client, path, body)
        assert r.status_code == 503 and f"is {node} running" in r.json()["detail"]


# ---- configuration -------------------------------------------------------------------------------
def test_dashboard_config_defaults_and_validation(tmp_path: Path) -> None:
    shipped = load_config(config_dir() / "dashboard.yaml", DashboardConfig)
    assert shipped == DashboardConfig() and shipped.host == "127.0.0.1" and shipped.loopback_only
    assert shipped.token == ""
    a, b = resolve_token(shipped), resolve_token(shipped)
    assert a != b and len(a) >= 32
    assert resolve_token(DashboardConfig(token="a-fixed-token-for-scripts")) == "a-fixed-token-for-scripts"
    for bad, words in (
        ("token: short", "at least 16"),
        ("host: 'not a host!'", "neither an IP address"),
        ("port: 70000", "less than or equal"),
        ("update_period_s: 0", "greater than 0"),
        ("colour: red", "unknown key"),
    ):
        path = tmp_path / "dashboard.yaml"
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=words):
            load_config(path, DashboardConfig)
    assert not DashboardConfig(host="0.0.0.0").loopback_only and DashboardConfig(host="::1").loopback_only


# ---- the live stream on a real server --------------------------------------------------------------
def read_events(
    lines: Iterator[str],
    wanted: set[str],
    until: Callable[[dict], bool] = lambda got: True,
    timeout: float = 10.0,
) -> dict[str, dict]:
    """Server-sent events from `lines` until each kind in `wanted` has been seen (latest of each kept)
    and `until(latest)` holds."""
    got: dict[str, dict] = {}
    event = None
    deadline = time.monotonic() + timeout
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            got[event] = json.loads(line[6:])
        elif not line:
            event = None
            if wanted <= set(got) and until(got):
                return got
        assert time.monotonic() < deadline, f"events seen: {sorted(got)}"
    raise AssertionError(f"stream ended; events seen: {sorted(got)}")


def test_live_updates_stream_and_the_server_stops_promptly(graph: InMemoryGraph) -> None:
    app = create_app(graph, CONFIG.model_copy(update={"allowed_hosts": []}), TOKEN)
    server = DashboardServer(app, "127.0.0.1", 0).start()
    try:
        with pytest.raises(PortInUse, match="cannot listen"):
            DashboardServer(app, "127.0.0.1", server.port)  # the port is taken: a clear error at once
        graph.tick()
        graph.learner_report(10, {"losses/critic": 1.0})
        with (
            httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http,
            http.stream("GET", "/api/events") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            first = read_events(lines, {"status", "episodes", "losses"})
            assert first["status"]["control"]["rate_hz"] is None  # one report: no rate yet
            assert first["episodes"]["available"] is False
            assert first["losses"]["series"][0]["key"] == "losses/critic"
            # Controls from another connection show up on the open stream.
            assert http.post("/api/episode/start", json={}).status_code == 200
            assert http.post("/api/episode/stop", json={"success": True}).status_code == 200
            update = read_events(lines, {"episodes"}, lambda got: got["episodes"]["episodes"])
            assert [(e["index"], e["success"]) for e in update["episodes"]["episodes"]] == [(0, True)]
            # Stopping the server ends the open stream; nothing waits for the client to leave.
            began = time.monotonic()
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            for _ in lines:
                pass
            stopper.join(timeout=10)
            assert not stopper.is_alive() and time.monotonic() - began < 4.0
    finally:
        server.stop()


def test_an_unreadable_store_is_reported_and_recovers(client: TestClient, graph: InMemoryGraph) -> None:
    store = EpisodeStore.create(graph.store_path, SPEC)
    episodes_dir = store.root / "episodes"
    episodes_dir.rename(store.root / "episodes.away")
    episodes_dir.write_text("not a directory")  # listing it fails (as an unmounted disk would)
    listing = client.get("/api/episodes", headers=AUTH).json()
    assert not listing["available"] and listing["message"].startswith("store unreadable")
    assert client.get("/api/status", headers=AUTH).status_code == 200  # the rest of the page still works
    episodes_dir.unlink()
    (store.root / "episodes.away").rename(episodes_dir)
    assert client.get("/api/episodes", headers=AUTH).json()["available"]

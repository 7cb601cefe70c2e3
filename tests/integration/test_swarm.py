"""The swarm:// platform against a real Docker Swarm: one node, and two nodes (two dockerds, each in its
own network namespace), with `fm up` and HAProxy on the host. The demo images (busybox, FROM scratch)
are built on the manager; the worker gets them from the platform by save/load."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fridaymorning.demo.image import build_images
from fridaymorning.demo.run import BackgroundTraffic
from fridaymorning.testing import (
    EVENT_DEADLINE_S,
    FM,
    FmUpProcess,
    quick_service,
    quick_settings,
    run_fm,
    wait_for_sync,
)

from .conftest import find_free_port
from .swarm_cluster import SwarmCluster, host_snapshot

pytestmark = [pytest.mark.swarm, pytest.mark.haproxy, pytest.mark.slow]

# Swarm on a busy 2-core machine: creating a service and its tasks can take tens of seconds.
SWARM_DEADLINE_S = 300.0
API_TIMEOUT_S = 30.0


def start_cluster(size: int) -> SwarmCluster:
    cluster = SwarmCluster(Path(tempfile.mkdtemp(prefix="fmsw", dir="/tmp")), size)
    try:
        cluster.start()
        cluster.load_images(lambda client: build_images(client, ["v1", "v2", "v3"]))
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def one_node() -> Iterator[SwarmCluster]:
    cluster = start_cluster(1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[SwarmCluster]:
    cluster = start_cluster(2)
    yield cluster
    cluster.stop()


SWARM_STEPS = [
    {"weight": 20, "min_duration_s": 3, "max_duration_s": 240, "min_requests": 50},
    {"weight": 50, "min_duration_s": 3, "max_duration_s": 240, "min_requests": 50},
]


def swarm_config(tmp_path: Path, cluster: SwarmCluster, haproxy: str, replicas: int, **rollout: Any) -> Path:
    steps = rollout.pop("steps", SWARM_STEPS)
    platform = {
        "url": f"swarm+unix://{cluster.manager.socket}",
        "image": "fm-demo:{version}",
        "container_port": 8080,
        "replicas": replicas,
        "health_timeout_s": SWARM_DEADLINE_S,
        "stop_grace_s": 2,
        "image_nodes": [worker.docker_host for worker in cluster.workers],
    }
    settings = quick_settings(
        tmp_path / "state",
        quick_service("web", f"127.0.0.1:{find_free_port()}", platform=platform, steps=steps, **rollout),
        haproxy={"binary": haproxy},
        collector={"listen": f"127.0.0.1:{find_free_port()}", "lateness_s": 0.5},
        api=f"127.0.0.1:{find_free_port()}",
    )
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def services_of(cluster: SwarmCluster) -> list[str]:
    return cluster.manager.docker("service", "ls", "--format", "{{.Name}}").stdout.split()


def task_nodes(cluster: SwarmCluster, service: str) -> list[str]:
    listing = cluster.manager.docker(
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.ID}}",
        "--no-trunc",
    )
    ids = [line.split()[1] for line in listing.stdout.splitlines() if line.strip()]
    return [
        cluster.manager.docker("inspect", "--format", "{{.NodeID}}", task_id).stdout.strip()
        for task_id in ids
    ]


def failed_stable(tally: dict[str, dict[str, int]], stable: set[str]) -> int:
    """5xx answers of the stable versions, HAProxy's own 5xx, and requests with no answer at all."""
    return sum(
        counts["errors"] + counts["transport_errors"]
        for version, counts in tally.items()
        if version in stable or version not in {"v1", "v2", "v3"}
    )


def deploy(config: Path, version: str) -> int:
    return run_fm("deploy", version, "--wait", config=config, timeout=SWARM_DEADLINE_S * 2).returncode


def test_one_node_promotes_the_good_version_and_rolls_back_the_bad(
    tmp_path: Path, one_node: SwarmCluster, haproxy_binary: str
) -> None:
    """On one node, v2 is promoted and v3 rolled back, each version a Swarm service, with no failed
    stable request; the losing services are removed, and an orderly stop removes every service."""
    config = swarm_config(tmp_path, one_node, haproxy_binary, replicas=2)
    up = FmUpProcess(config, timeout_s=SWARM_DEADLINE_S)
    traffic = BackgroundTraffic(up.frontend, rate=40)
    traffic.start()
    try:
        assert services_of(one_node) == ["web-v1"]
        assert deploy(config, "v2") == 0, up.log_path.read_text()[-3000:]
        assert services_of(one_node) == ["web-v2"]
        assert deploy(config, "v3") == 3, up.log_path.read_text()[-3000:]
        assert services_of(one_node) == ["web-v2"]
    finally:
        tally = traffic.stop()
        assert up.stop() == 0
    assert failed_stable(tally, {"v1", "v2"}) == 0, tally
    assert tally["v3"]["requests"] > 0 and tally["v2"]["requests"] > 0, tally
    assert services_of(one_node) == []


def test_fm_demo_runs_on_swarm(one_node: SwarmCluster, haproxy_binary: str) -> None:
    """`fm demo --platform swarm` builds its images on the manager, promotes v2 and rolls back v3 as Swarm
    services, with no failed stable request, and leaves no service behind."""
    command = [
        *FM,
        "demo",
        "--json",
        "--rate",
        "60",
        "--platform",
        "swarm",
        "--docker-host",
        one_node.manager.docker_host,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SWARM_DEADLINE_S * 3, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [release["outcome"] for release in result["releases"]] == ["promoted", "rolled_back"]
    assert result["failed_stable_requests"] == 0 and result["ok"], result
    assert "built fm-demo:v1, fm-demo:v2, fm-demo:v3" in done.stderr
    assert services_of(one_node) == []


def test_two_nodes_with_a_killed_task_replaced(
    tmp_path: Path, two_nodes: SwarmCluster, haproxy_binary: str
) -> None:
    """On two nodes, v1's tasks run on both; a stable task killed with `docker kill` mid-rollout is replaced
    by Swarm, and its HAProxy server with it (new port), with no failed stable request; v2 is promoted and
    v3 rolled back."""
    config = swarm_config(tmp_path, two_nodes, haproxy_binary, replicas=2)
    up = FmUpProcess(config, timeout_s=SWARM_DEADLINE_S)
    traffic = BackgroundTraffic(up.frontend, rate=40)
    traffic.start()
    admin = httpx.Client(timeout=API_TIMEOUT_S)
    try:
        assert sorted(task_nodes(two_nodes, "web-v1")) == sorted(node.node_id for node in two_nodes.nodes)
        servers_before = server_addresses(up)
        worker = two_nodes.workers[0]
        victim = worker.docker(
            "ps", "-q", "--filter", "label=com.docker.swarm.service.name=web-v1"
        ).stdout.split()
        assert len(victim) == 1
        rollout = start_rollout(config, admin, up, "v2")
        worker.docker("kill", victim[0])
        wait_for_sync(
            lambda: replaced(servers_before, server_addresses(up)),
            "the killed task's server replaced",
            SWARM_DEADLINE_S,
        )
        final = wait_rollout(admin, up, rollout, {"promoted", "rolled_back", "aborted"})
        assert final["phase"] == "promoted", final["reason"]
        assert sorted(task_nodes(two_nodes, "web-v2")) == sorted(node.node_id for node in two_nodes.nodes)
        assert deploy(config, "v3") == 3
    finally:
        tally = traffic.stop()
        admin.close()
        assert up.stop() == 0
    assert failed_stable(tally, {"v1", "v2"}) == 0, tally
    assert services_of(two_nodes) == []
    assert [node.docker("ps", "-aq").stdout.split() for node in two_nodes.nodes] == [[], []]


def test_kill_9_of_fm_up_mid_rollout_resumes(
    tmp_path: Path, two_nodes: SwarmCluster, haproxy_binary: str
) -> None:
    """kill -9 of `fm up` during a Swarm rollout: the services keep serving; a restarted `fm up` adopts
    them and resumes the rollout at the same weight, which is then promoted."""
    steps = [{"weight": 30, "min_duration_s": 600, "max_duration_s": 900, "min_requests": 20}]
    config = swarm_config(tmp_path, two_nodes, haproxy_binary, replicas=1, steps=steps)
    first = FmUpProcess(config, timeout_s=SWARM_DEADLINE_S)
    traffic = BackgroundTraffic(first.frontend, rate=40)
    traffic.start()
    admin = httpx.Client(timeout=API_TIMEOUT_S)
    second = None
    try:
        rollout = start_rollout(config, admin, first, "v2")
        first.kill()
        assert sorted(services_of(two_nodes)) == ["web-v1", "web-v2"]
        second = FmUpProcess(config, timeout_s=SWARM_DEADLINE_S)
        resumed = wait_rollout(admin, second, rollout, {"progressing"})
        assert resumed["canary_weight"] == 30
        assert "resumed" in [event["kind"] for event in resumed["events"]]
        assert run_fm("promote", "--full", config=config).returncode == 0
        final = wait_rollout(admin, second, rollout, {"promoted", "rolled_back", "aborted"})
        assert final["phase"] == "promoted", final["reason"]
    finally:
        tally = traffic.stop()
        admin.close()
        if second is not None:
            assert second.stop() == 0
        else:
            first.kill()
    assert failed_stable(tally, {"v1", "v2"}) == 0, tally
    wait_for_sync(lambda: services_of(two_nodes) == [], "every service removed", SWARM_DEADLINE_S)


def test_cluster_leaves_the_host_as_found() -> None:
    """Two dockerds in their namespaces, a service on both, then teardown: no dockerd, namespace, link,
    iptables rule or ip_forward change is left on the host."""
    before = host_snapshot()
    cluster = start_cluster(2)
    try:
        cluster.manager.docker("service", "create", "-d", "--name", "probe", "--replicas", "2", "fm-demo:v1")
        assert len(cluster.dockerd_processes()) >= 2
    finally:
        cluster.stop()
    after = host_snapshot()
    assert cluster.dockerd_processes() == []
    # Other test runs may add links and namespaces of their own meanwhile: only ours and dockerd's count.
    assert not [name for name in after["links"] if cluster.suffix in name]
    new_links = after["links"] - before["links"]
    assert not [name for name in new_links if name.startswith(("docker", "veth", "br-", "vx-"))], new_links
    assert not [name for name in after["netns"] if cluster.suffix in name]
    assert after["iptables"] == before["iptables"]
    assert after["ip_forward"] == before["ip_forward"]


# --- helpers ------------------------------------------------------------------------------------------


def start_rollout(config: Path, admin: httpx.Client, up: FmUpProcess, version: str) -> int:
    assert run_fm("deploy", version, config=config).returncode == 0
    rollout = admin.get(f"{up.api}/rollouts").json()[0]
    wait_rollout(admin, up, rollout["id"], {"progressing"})
    return int(rollout["id"])


def wait_rollout(admin: httpx.Client, up: FmUpProcess, rollout_id: int, phases: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + SWARM_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            rollout: dict[str, Any] = admin.get(f"{up.api}/rollouts/{rollout_id}").json()
        except httpx.TransportError:
            time.sleep(0.3)
            continue
        if rollout["phase"] in phases:
            return rollout
        if rollout["phase"] in {"promoted", "rolled_back", "aborted"}:
            raise AssertionError(f"rollout {rollout_id} ended {rollout['phase']}: {rollout['reason']}")
        time.sleep(0.3)
    raise AssertionError(f"rollout {rollout_id} never reached {phases} in {EVENT_DEADLINE_S} s")


def server_addresses(up: FmUpProcess) -> dict[str, str]:
    """Each HAProxy server and its address, from the haproxy.cfg `fm up` rewrites after every change."""
    text = (Path(yaml.safe_load(up.config.read_text())["state_dir"]) / "haproxy.cfg").read_text()
    servers = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "server":
            servers[words[1]] = words[2]
    return servers


def replaced(before: dict[str, str], now: dict[str, str]) -> bool:
    """True when some stable server kept its name but got a new address (its task was replaced)."""
    return any(
        name in now and now[name] != address for name, address in before.items() if name.startswith("v1-")
    )

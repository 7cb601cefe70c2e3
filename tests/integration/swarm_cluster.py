"""A real Docker Swarm of one or two nodes on this machine, each node a dockerd in a network namespace.

Node i runs in the namespace `fm<role><suffix>`, reached from the host through a veth pair (host side
`fh<suffix><i>`, a /30 of its own); with two nodes, a second veth pair joins the two namespaces, and the
Swarm runs over it. HAProxy, on the host, reaches each node's published ports at its namespace address,
which the node label `fridaymorning.address` carries. Every name has a random suffix, so two runs never
collide. dockerd changes iptables, sysctls and links only inside its namespace; deleting the namespaces
at stop undoes all of it, and `host_snapshot()` lets a test check that the host is as it was.

dockerd is started with `nsenter --net=...`: `ip netns exec` remounts /sys, and dockerd then fails with
"Devices cgroup isn't mounted".
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DOCKERD_START_TIMEOUT_S = 120.0
DOCKERD_STOP_TIMEOUT_S = 60.0


def required(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"'{program}' is not installed. Install it with: sudo apt-get install -y {package}")
    return path


def run(*argv: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def host_snapshot() -> dict[str, Any]:
    """What a dockerd in the host namespace would change: links, iptables rules and policies (without
    counters), the forwarding sysctl, and the network namespaces."""
    links = set(re.findall(r"^\d+: ([^:@]+)", run("ip", "-o", "link").stdout, re.M))
    rules = [
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in run("iptables-save").stdout.splitlines()
        if line and not line.startswith("#")
    ]
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    netns = {line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if line.strip()}
    return {"links": links, "iptables": sorted(rules), "ip_forward": forward, "netns": netns}


def unused_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no address of the host lies in."""
    taken = [
        ipaddress.ip_interface(a).network for a in re.findall(r"inet (\S+)", run("ip", "-4", "addr").stdout)
    ]
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.{secrets.randbelow(150) + 100}.{secrets.randbelow(256)}.0/24")
        if not any(subnet.overlaps(network) for network in taken):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet")


@dataclass
class Node:
    namespace: str
    host_link: str
    address: str  # reachable from the host
    swarm_address: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker", "-H", self.docker_host, *args, check=check)


@dataclass
class SwarmCluster:
    root: Path
    size: int
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[Node] = field(default_factory=list)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def start(self) -> None:
        """Namespaces, links, one dockerd per node, the Swarm, the address label of each node."""
        if os.geteuid() != 0:
            pytest.fail("the swarm tests start dockerd in network namespaces: run them as root")
        dockerd = required("dockerd", "docker.io")
        required("docker", "docker.io")
        nsenter = required("nsenter", "util-linux")
        subnet = unused_subnet()
        hosts = list(subnet.hosts())
        for index in range(self.size):
            role = "m" if index == 0 else "w"
            node_root = self.root / f"node{index}"
            node_root.mkdir(parents=True)
            host_side, node_side = hosts[4 * index], hosts[4 * index + 1]
            link_address = hosts[128 + index]
            node = Node(f"fm{role}{self.suffix}", f"fh{self.suffix}{index}", str(node_side), "", node_root)
            node.swarm_address = str(link_address) if self.size > 1 else node.address
            self.nodes.append(node)
            run("ip", "netns", "add", node.namespace)
            run(
                "ip",
                "link",
                "add",
                node.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                node.namespace,
            )
            run("ip", "addr", "add", f"{host_side}/30", "dev", node.host_link)
            run("ip", "link", "set", node.host_link, "up")
            run("ip", "-n", node.namespace, "addr", "add", f"{node_side}/30", "dev", "eth0")
            for link in ("lo", "eth0"):
                run("ip", "-n", node.namespace, "link", "set", link, "up")
        if self.size > 1:
            self._join_namespaces()
        for node in self.nodes:
            self._start_dockerd(node, dockerd, nsenter)
        self._form_swarm()

    def _join_namespaces(self) -> None:
        """A veth pair between the manager's namespace and each worker's: the Swarm's own network."""
        for worker in self.workers:
            pair = f"fx{self.suffix}{self.nodes.index(worker)}"
            run("ip", "link", "add", pair, "type", "veth", "peer", "name", "eth1", "netns", worker.namespace)
            run("ip", "link", "set", pair, "netns", self.manager.namespace)
            run("ip", "-n", self.manager.namespace, "link", "set", pair, "name", f"eth{pair[-1]}")
            for node, link in ((self.manager, f"eth{pair[-1]}"), (worker, "eth1")):
                run("ip", "-n", node.namespace, "addr", "add", f"{node.swarm_address}/25", "dev", link)
                run("ip", "-n", node.namespace, "link", "set", link, "up")

    def _start_dockerd(self, node: Node, dockerd: str, nsenter: str) -> None:
        log = (node.root / "dockerd.log").open("wb")
        node.process = subprocess.Popen(
            [
                nsenter,
                f"--net=/var/run/netns/{node.namespace}",
                dockerd,
                "--data-root",
                str(node.root / "data"),
                "--exec-root",
                str(node.root / "exec"),
                "--pidfile",
                str(node.root / "dockerd.pid"),
                "--host",
                node.docker_host,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT_S
        while node.docker("version", check=False).returncode != 0:
            if node.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"dockerd in {node.namespace} did not start: "
                    + (node.root / "dockerd.log").read_text()[-3000:]
                )
            time.sleep(0.3)

    def _form_swarm(self) -> None:
        manager = self.manager
        manager.docker(
            "swarm", "init", "--advertise-addr", manager.swarm_address, "--listen-addr", manager.swarm_address
        )
        manager.node_id = manager.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for worker in self.workers:
            worker.docker(
                "swarm",
                "join",
                "--advertise-addr",
                worker.swarm_address,
                "--token",
                token,
                f"{manager.swarm_address}:2377",
            )
            worker.node_id = worker.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        for node in self.nodes:
            manager.docker(
                "node", "update", "--label-add", f"fridaymorning.address={node.address}", node.node_id
            )
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT_S
        while True:
            ready = manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split()
            if ready.count("Ready") == self.size:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"swarm nodes not ready: {ready}")
            time.sleep(0.3)

    def load_images(self, build: Any) -> None:
        """Build images on the manager with `build(client)` (the docker SDK)."""
        import docker

        client = docker.DockerClient(base_url=self.manager.docker_host, version="auto")
        try:
            build(client)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop every dockerd (SIGTERM, then SIGKILL), unmount what they left, delete the namespaces and
        the files. Safe to call on a half-started cluster."""
        for node in self.nodes:
            self._stop_dockerd(node)
        self._kill_leftovers()
        self._unmount_leftovers()
        for node in self.nodes:
            run("ip", "netns", "del", node.namespace, check=False)
            run("ip", "link", "del", node.host_link, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_dockerd(self, node: Node) -> None:
        if node.process is None or node.process.poll() is not None:
            return
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=DOCKERD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=30)

    def _kill_leftovers(self) -> None:
        """containerd and its shims run with our root in their command line; any left is killed."""
        root = str(self.root)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if root in cmdline and int(entry.name) != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount_leftovers(self) -> None:
        root = str(self.root)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(root)), key=len, reverse=True):
            run("umount", "-l", mount, check=False)

    def dockerd_processes(self) -> list[int]:
        """Pids of live processes that run with this cluster's root in their command line."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if str(self.root) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                        found.append(int(entry.name))
        return found

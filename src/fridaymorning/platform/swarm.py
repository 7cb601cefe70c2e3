"""swarm:// — each version is a Docker Swarm service, each instance one of its tasks.

- A version runs as the service `<service>-<version>` (`<service>-<label>` for a labelled one, e.g. a
  fresh baseline), with `replicas` tasks, labelled with the fm service, version, label and the state
  directory that owns it (LABEL_OWNER), so a restarted fm finds its services again: Swarm itself is the
  record, and adoption needs no file.
- Each task publishes the image's port (`container_port`) in host mode with no fixed published port, so
  every task gets an ephemeral port on its node; an instance is (node address, that port) and HAProxy,
  on the fm host, has one server per task. The node address is the node label LABEL_ADDRESS when set
  (where HAProxy reaches the node), else the node's Swarm address.
- The instance index is the task's slot: a task that Swarm replaces (its container died, its health
  check failed, its node went away) comes back in the same slot, on a new port, under the same server
  name. `current()` reports such replacements; the controller then replaces the HAProxy server.
- Health is the task's state (`running`, which waits for the image's HEALTHCHECK when there is one)
  and an HTTP GET of `health_path`; HAProxy's own checks come on top.
- Without a registry, the platform copies each version's image to the Docker hosts in `image_nodes`
  (`docker save | docker load`) before it creates the service.

The docker SDK is synchronous; every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fridaymorning.config import PlatformConfig
from fridaymorning.errors import PlatformError
from fridaymorning.models import Instance
from fridaymorning.platform._common import HealthProbe, check_start

log = logging.getLogger(__name__)

LABEL_SERVICE = "fridaymorning.service"
LABEL_VERSION = "fridaymorning.version"
LABEL_NAME = "fridaymorning.label"
LABEL_OWNER = "fridaymorning.owner"
# A node label: the address at which HAProxy reaches the node's published ports.
LABEL_ADDRESS = "fridaymorning.address"

POLL_INTERVAL_S = 0.25
ADOPT_HEALTH_TIMEOUT_S = 5.0
# How long Swarm waits before it restarts a task whose container exited.
RESTART_DELAY_NS = 500_000_000
# After the stop grace period, how long the tasks of a removed service may take to disappear.
REMOVAL_MARGIN_S = 30.0
DOCKER_TIMEOUT_S = 60
# Task states that will never become `running`.
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})


def docker_base_url(url: str) -> str | None:
    """The Docker host of a platform URL: None (the environment's, as `docker` uses) for 'swarm://',
    'unix:///run/docker.sock' for 'swarm+unix:///run/docker.sock', 'tcp://h:2375' for 'swarm+tcp://h:2375'."""
    parts = urlsplit(url)
    if parts.scheme == "swarm":
        return None
    transport = parts.scheme.removeprefix("swarm+")
    if transport == "unix":
        return f"unix://{parts.path}"
    return f"{transport}://{parts.netloc}{parts.path}"


def service_name(service: str, name: str) -> str:
    """The Swarm service of a version (or label) of an fm service: 'web-v2'; Docker refuses '_' and '.'
    in DNS names, so they become '-'."""
    return re.sub(r"[^A-Za-z0-9-]", "-", f"{service}-{name}")[:63]


def published_port(task: dict[str, Any], target_port: int) -> int | None:
    """The host port a task publishes for `target_port`. PortStatus lists each mapping twice; any one
    of them gives the port."""
    ports = (task.get("Status") or {}).get("PortStatus", {}).get("Ports") or []
    found = {port.get("PublishedPort") for port in ports if port.get("TargetPort") == target_port}
    found.discard(None)
    return min(found) if found else None


def task_error(task: dict[str, Any]) -> str:
    """Why a task is not running, as Swarm says it."""
    status = task.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or status.get("State", "unknown"))


@dataclass(frozen=True, slots=True)
class _Version:
    """One Swarm service this platform answers for."""

    service_id: str
    name: str
    version: str
    label: str


class SwarmPlatform:
    """Runs versions of one fm service as Swarm services through the Docker API of a manager node."""

    def __init__(
        self,
        config: PlatformConfig,
        workdir: str | None = None,
        *,
        service: str | None = None,
        client: Any = None,
    ) -> None:
        if not config.image:
            raise PlatformError(
                f"platform {config.url}: `image` is required (e.g. 'registry/app:{{version}}')"
            )
        self._config = config
        # The runtime gives each service the work directory <state_dir>/instances/<service>.
        self._service = service or (Path(workdir).name if workdir else "fm")
        self._owner = str(Path(workdir).resolve()) if workdir else self._service
        self._client = client
        self._versions: dict[str, _Version] = {}
        self._probe = HealthProbe(config.health_path, POLL_INTERVAL_S)
        self._node_addresses: dict[str, str] = {}

    # --- the Platform role -----------------------------------------------------------------------

    async def start(self, version: str, replicas: int, label: str = "") -> list[Instance]:
        """Create the service of `version` with `replicas` tasks, and wait until every task runs and
        answers its health check; on failure the service is removed and PlatformError raised."""
        check_start(version, replicas, label)
        name = service_name(self._service, label or version)
        if name in self._versions:
            raise PlatformError(f"cannot start version {version}: service {name} is running already")
        image = self._config.image.format(version=version)
        await self._call(self._distribute_image, image)
        created = await self._call(self._create_service, name, image, version, label, replicas)
        entry = _Version(created, name, version, label)
        self._versions[name] = entry
        try:
            return await self._wait_running(entry, replicas)
        except BaseException:
            await self._remove([entry])
            raise

    async def adopt(self, *, health_timeout_s: float = ADOPT_HEALTH_TIMEOUT_S) -> list[Instance]:
        """Take over the services a previous fm with this state directory left: return their running tasks
        that answer their health check. A service with no running task is removed."""
        found = await self._call(self._owned_services)
        adopted: list[Instance] = []
        empty: list[_Version] = []
        for entry in found:
            self._versions[entry.name] = entry
            instances = await self._running_instances(entry)
            healthy = [i for i in instances if await self._probe.answers_within(i, health_timeout_s)]
            if healthy:
                log.info("adopted %s: %s", entry.name, ", ".join(i.server for i in healthy))
                adopted.extend(healthy)
            else:
                empty.append(entry)
        if empty:
            log.warning("removing services with no healthy task: %s", [entry.name for entry in empty])
            await self._remove(empty)
        return adopted

    async def stop(self, instances: list[Instance]) -> None:
        """Remove the services these instances belong to: a version's tasks stop together. Waits until
        their tasks are gone (Swarm stops each container with its grace period)."""
        names = {service_name(self._service, i.label or i.version) for i in instances}
        unknown = sorted(name for name in names if name not in self._versions)
        if unknown:
            log.warning("not stopping %s: not started or adopted by this platform", unknown)
        await self._remove([self._versions[name] for name in sorted(names) if name in self._versions])

    async def health(self, instance: Instance) -> bool:
        """True when the instance answers GET health_path with 2xx within a second."""
        return await self._probe.health(instance)

    async def close(self) -> None:
        """Remove every service started or adopted, wait for their tasks to go, release the clients."""
        await self._remove(list(self._versions.values()))
        await self._probe.aclose()
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

    # --- replacements (platform.base.TracksReplacements) ------------------------------------------

    async def current(self, instances: Sequence[Instance]) -> list[Instance]:
        """The running tasks that now stand for `instances`: those still running, and the replacements
        Swarm started for the others (same slot, so same server name; a new task id and port). A task
        that is gone and not yet replaced is left out until its replacement runs."""
        names = {service_name(self._service, i.label or i.version) for i in instances}
        result: list[Instance] = []
        for name in sorted(names):
            entry = self._versions.get(name)
            if entry is not None:
                result.extend(await self._running_instances(entry))
        return result

    # --- Docker calls (in worker threads) --------------------------------------------------------

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except PlatformError:
            raise
        except Exception as error:  # the SDK raises requests' and its own errors alike
            raise PlatformError(f"Docker ({self._config.url}): {error}") from error

    def _docker(self) -> Any:
        if self._client is None:
            try:
                import docker
            except ImportError as error:
                raise PlatformError(
                    "swarm:// needs the docker SDK: pip install 'fridaymorning[swarm]'"
                ) from error
            base_url = docker_base_url(self._config.url)
            if base_url is None:
                self._client = docker.from_env(version="auto", timeout=DOCKER_TIMEOUT_S)
            else:
                self._client = docker.DockerClient(
                    base_url=base_url, version="auto", timeout=DOCKER_TIMEOUT_S
                )
        return self._client

    def _labels(self, version: str, label: str) -> dict[str, str]:
        return {
            LABEL_SERVICE: self._service,
            LABEL_VERSION: version,
            LABEL_NAME: label,
            LABEL_OWNER: self._owner,
        }

    def _create_service(self, name: str, image: str, version: str, label: str, replicas: int) -> str:
        from docker.types import EndpointSpec, RestartPolicy, ServiceMode

        client = self._docker()
        for stale in client.services.list(filters={"name": name}):
            if stale.name == name and stale.attrs["Spec"].get("Labels", {}).get(LABEL_OWNER) == self._owner:
                log.warning("removing service %s left by a previous fm", name)
                stale.remove()
        env = {**self._config.env, "FM_VERSION": version, "FM_PORT": str(self._config.container_port)}
        port = {"TargetPort": self._config.container_port, "Protocol": "tcp", "PublishMode": "host"}
        service = client.services.create(
            image,
            name=name,
            labels=self._labels(version, label),
            container_labels=self._labels(version, label),
            env=[f"{key}={value}" for key, value in env.items()],
            mode=ServiceMode("replicated", replicas=replicas),
            endpoint_spec=EndpointSpec(ports=[port]),
            restart_policy=RestartPolicy("any", delay=RESTART_DELAY_NS),
            stop_grace_period=int(self._config.stop_grace_s * 1e9),
            # An init as PID 1 passes SIGTERM on: a server as PID 1 without a handler ignores it.
            init=True,
        )
        return str(service.id)

    def _owned_services(self) -> list[_Version]:
        client = self._docker()
        found = []
        for service in client.services.list(filters={"label": f"{LABEL_OWNER}={self._owner}"}):
            labels = service.attrs["Spec"].get("Labels", {})
            found.append(
                _Version(
                    str(service.id), service.name, labels.get(LABEL_VERSION, ""), labels.get(LABEL_NAME, "")
                )
            )
        return found

    def _tasks(self, entry: _Version, desired: str | None = "running") -> list[dict[str, Any]]:
        """The tasks of `entry` (those meant to run, unless `desired` is None); [] when it is gone."""
        import docker

        filters = {"service": entry.service_id}
        if desired is not None:
            filters["desired-state"] = desired
        try:
            tasks: list[dict[str, Any]] = self._docker().api.tasks(filters=filters)
        except docker.errors.NotFound:
            return []
        return tasks

    def _node_address(self, node_id: str) -> str:
        address = self._node_addresses.get(node_id)
        if address is None:
            attrs = self._docker().nodes.get(node_id).attrs
            labels = attrs.get("Spec", {}).get("Labels") or {}
            address = labels.get(LABEL_ADDRESS) or attrs.get("Status", {}).get("Addr", "")
            if not address or address == "0.0.0.0":
                raise PlatformError(f"node {node_id} has no address; set the node label {LABEL_ADDRESS}")
            self._node_addresses[node_id] = address
        return address

    def _instances_of(self, entry: _Version, tasks: list[dict[str, Any]]) -> list[Instance]:
        instances = []
        for task in tasks:
            port = published_port(task, self._config.container_port)
            if task.get("Status", {}).get("State") != "running" or port is None:
                continue
            host = self._node_address(task["NodeID"])
            instances.append(Instance(entry.version, int(task["Slot"]), host, port, task["ID"], entry.label))
        return sorted(instances, key=lambda instance: instance.index)

    def _distribute_image(self, image: str) -> None:
        """Copy `image` to every Docker host of `image_nodes` that lacks it: `docker save | docker load`."""
        if not self._config.image_nodes:
            return
        import docker

        source = self._docker()
        for base_url in self._config.image_nodes:
            target = docker.DockerClient(base_url=base_url, version="auto", timeout=DOCKER_TIMEOUT_S)
            try:
                try:
                    target.images.get(image)
                    continue
                except docker.errors.ImageNotFound:
                    pass
                log.info("copying image %s to %s", image, base_url)
                data = b"".join(source.images.get(image).save(named=True))
                target.images.load(data)
            finally:
                target.close()

    # --- waiting ---------------------------------------------------------------------------------

    async def _running_instances(self, entry: _Version) -> list[Instance]:
        tasks = await self._call(self._tasks, entry)
        instances: list[Instance] = await self._call(self._instances_of, entry, tasks)
        return instances

    async def _wait_running(self, entry: _Version, replicas: int) -> list[Instance]:
        """Poll until `replicas` tasks run and answer; raise PlatformError when a task fails for good
        (image missing, refused) or the health timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.health_timeout_s
        last = "no task yet"
        while loop.time() < deadline:
            tasks = await self._call(self._tasks, entry)
            rejected = [task for task in tasks if task.get("Status", {}).get("State") in FAILED_STATES]
            if rejected:
                raise PlatformError(f"version {entry.version} ({entry.name}): {task_error(rejected[0])}")
            instances: list[Instance] = await self._call(self._instances_of, entry, tasks)
            if len(instances) >= replicas:
                answers = await asyncio.gather(*(self.health(instance) for instance in instances))
                if all(answers):
                    return instances[:replicas]
                last = "running but not answering " + self._config.health_path
            else:
                states = sorted(task.get("Status", {}).get("State", "?") for task in tasks)
                last = f"tasks {states}"
            await asyncio.sleep(POLL_INTERVAL_S)
        raise PlatformError(
            f"version {entry.version} ({entry.name}) not healthy within "
            f"{self._config.health_timeout_s:g}s: {last}"
        )

    async def _remove(self, entries: list[_Version]) -> None:
        """Remove the services, then wait (bounded) until none of their tasks is left on any node."""
        if not entries:
            return
        for entry in entries:
            self._versions.pop(entry.name, None)
        await self._call(self._remove_services, entries)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.stop_grace_s + REMOVAL_MARGIN_S
        while await self._call(self._tasks_left, entries):
            if loop.time() >= deadline:
                log.warning("tasks of %s still listed after removal", [entry.name for entry in entries])
                return
            await asyncio.sleep(POLL_INTERVAL_S)

    def _remove_services(self, entries: list[_Version]) -> None:
        import docker

        client = self._docker()
        for entry in entries:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_service(entry.service_id)

    def _tasks_left(self, entries: list[_Version]) -> bool:
        """True while Swarm lists a task of `entries`, or a container of theirs exists on the manager or
        on a node of `image_nodes` (the hosts this platform can see)."""
        import docker

        client = self._docker()
        if any(self._tasks(entry, None) for entry in entries):
            return True
        names = {entry.name for entry in entries}
        hosts = [client] + [
            docker.DockerClient(base_url=url, version="auto", timeout=DOCKER_TIMEOUT_S)
            for url in self._config.image_nodes
        ]
        try:
            for host in hosts:
                containers = host.api.containers(all=True, filters={"label": f"{LABEL_OWNER}={self._owner}"})
                if any(c.get("Labels", {}).get("com.docker.swarm.service.name") in names for c in containers):
                    return True
        finally:
            for host in hosts[1:]:
                host.close()
        return False

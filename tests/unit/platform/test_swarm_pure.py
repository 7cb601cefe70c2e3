"""The swarm:// platform's pure parts: Docker hosts from URLs, service names, published ports."""

from __future__ import annotations

import pytest

from fridaymorning.config import PlatformConfig
from fridaymorning.errors import PlatformError
from fridaymorning.platform._common import check_start
from fridaymorning.platform.swarm import SwarmPlatform, docker_base_url, published_port, service_name


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("swarm://", None),
        ("swarm+unix:///run/docker.sock", "unix:///run/docker.sock"),
        ("swarm+tcp://manager:2375", "tcp://manager:2375"),
    ],
)
def test_docker_host_of_a_platform_url(url: str, base: str | None) -> None:
    """swarm:// uses the environment's Docker host (DOCKER_HOST or the default socket); the others name it."""
    assert docker_base_url(url) == base


def test_service_names_are_dns_names() -> None:
    """'_' and '.' are refused in Swarm service names, so they become '-'."""
    assert service_name("web", "v2") == "web-v2"
    assert service_name("web", "v1__baseline") == "web-v1--baseline"
    assert service_name("web", "1.2.3") == "web-1-2-3"


def test_published_port_dedupes_the_twice_listed_entries() -> None:
    """PortStatus lists each host-mode mapping twice; the port is read once, for the target port only."""
    entry = {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 32768, "PublishMode": "host"}
    other = {"Protocol": "tcp", "TargetPort": 9090, "PublishedPort": 32769, "PublishMode": "host"}
    task = {"Status": {"State": "running", "PortStatus": {"Ports": [entry, dict(entry), other]}}}
    assert published_port(task, 8080) == 32768
    assert published_port({"Status": {"State": "starting", "PortStatus": {}}}, 8080) is None


def test_swarm_config_needs_an_image_and_local_a_command() -> None:
    """swarm:// runs images, local:// runs commands: each without its own is a config error."""
    assert PlatformConfig(url="swarm://", image="app:{version}").command == []
    with pytest.raises(ValueError, match="needs `image`"):
        PlatformConfig(url="swarm+unix:///run/docker.sock")
    with pytest.raises(ValueError, match="needs `command`"):
        PlatformConfig(url="local://")


def test_the_platform_is_named_after_its_service_dir() -> None:
    """The runtime gives each service the work directory instances/<service>: its services are named so."""
    platform = SwarmPlatform(
        PlatformConfig(url="swarm://", image="app:{version}"), "/tmp/state/instances/web"
    )
    assert platform._service == "web"
    with pytest.raises(PlatformError, match="not a valid version"):
        check_start("v 2", 1, "")

"""`fm demo --platform`: local processes or Docker Swarm services, and nothing else."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fridaymorning.cli import app
from fridaymorning.demo.run import SwarmDemo, demo_config


def test_an_unknown_platform_is_a_usage_error() -> None:
    """An unknown --platform exits 2 and names the valid ones."""
    result = CliRunner().invoke(app, ["demo", "--platform", "k8s"])
    assert result.exit_code == 2
    assert "valid: local, swarm" in result.output


def test_the_swarm_demo_runs_the_demo_images(tmp_path: Path) -> None:
    """On Swarm the demo's service runs the images fm-demo:<version> on the given manager, two replicas."""
    swarm = SwarmDemo("swarm+unix:///run/m.sock", ["unix:///run/w.sock"])
    platform = demo_config(tmp_path, swarm).services[0].platform
    assert (platform.url, platform.image, platform.replicas) == (
        "swarm+unix:///run/m.sock",
        "fm-demo:{version}",
        2,
    )
    assert platform.image_nodes == ["unix:///run/w.sock"] and platform.command == []
    assert demo_config(tmp_path).services[0].platform.url == "local://"

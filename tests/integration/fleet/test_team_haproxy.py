"""Bring your own HAProxy: a team's HAProxy, with its own TLS frontend, ACL and unrelated backend,
loads fridaymorning's file with a second `-f`; a rollout runs through it and never writes its file."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fridaymorning.config import Config
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.fleetlab import TEAM_DEFAULTS
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.router.brought import include_path, write_include_file
from fridaymorning.testing import EVENT_DEADLINE_S, FM, quick_service, quick_settings

pytestmark = pytest.mark.haproxy

TEAM_CONFIG = (
    """\
global
    stats socket {admin} mode 600 level admin
    log 127.0.0.1:{collector} local0
    maxconn 500
"""
    + TEAM_DEFAULTS
    + """\
frontend www
    bind 127.0.0.1:{https} ssl crt {pem}
    log global
    log-format "{log_format}"
    acl is_other path_beg /other
    use_backend other if is_other
    default_backend web

backend other
    http-request set-path /
    server other1 127.0.0.1:{other} check inter 1s
"""
)


def brought_config(tmp_path: Path, free_port: Callable[[], int], admin: Path, https: int) -> Config:
    return Config.model_validate(
        quick_settings(
            tmp_path / "state",
            quick_service("web", f"127.0.0.1:{https}"),
            haproxy={
                "instances": [{"name": "team", "admin": f"unix://{admin}"}],
                "team_config": "team/haproxy.cfg",
                "include_file": str(tmp_path / "team" / "fridaymorning.cfg"),
            },
            collector={"listen": f"127.0.0.1:{free_port()}", "lateness_s": 0.5},
            api=f"127.0.0.1:{free_port()}",
            base_dir=str(tmp_path),
        )
    )


async def test_a_rollout_through_the_teams_haproxy_leaves_its_file_and_backend_alone(
    tmp_path: Path,
    free_port: Callable[[], int],
    http_upstreams: Any,
    team_haproxies: Callable[..., Any],
    start_runtime: Any,
    self_signed_pem: Callable[[Path], Path],
    background_requests: Callable[..., Any],
) -> None:
    """The team's TLS frontend sends /other to its own backend and the rest to ours: v2 is promoted
    through it, the team's haproxy.cfg is byte-identical afterwards, and /other never failed."""
    team = tmp_path / "team"
    team.mkdir()
    admin, https = team / "admin.sock", free_port()
    (other,) = await http_upstreams(1)
    config = brought_config(tmp_path, free_port, admin, https)
    theirs = team / "haproxy.cfg"
    collector = config.collector.listen.rsplit(":", 1)[1]
    pem = self_signed_pem(team)
    theirs.write_text(
        TEAM_CONFIG.format(
            admin=admin, collector=collector, https=https, pem=pem, log_format=COMPACT_LOG_FORMAT, other=other
        )
    )
    before = hashlib.sha256(theirs.read_bytes()).hexdigest()
    ours = write_include_file(config)  # what `fm up` writes on its first start
    assert ours == include_path(config)
    config_file = tmp_path / "fridaymorning.yaml"
    config_file.write_text(config_yaml(config))
    validated = subprocess.run(
        [*FM, "validate", str(config_file)], capture_output=True, text=True, check=False
    )
    assert validated.returncode == 0, validated.stderr + validated.stdout
    assert f"-f {ours}` passes" in validated.stdout

    haproxy = team_haproxies([theirs, ours], str(admin), team / "haproxy.out")
    await haproxy.start()
    runtime = await start_runtime(config)
    async with (
        httpx.AsyncClient(verify=False, timeout=10) as client,
        background_requests(
            client, {"web": f"https://127.0.0.1:{https}/", "other": f"https://127.0.0.1:{https}/other"}
        ) as tallies,
    ):
        runtime.controllers["web"].deploy("v2")
        final = await asyncio.wait_for(runtime.controllers["web"].wait(), 2 * EVENT_DEADLINE_S)
    assert final.phase is RolloutPhase.PROMOTED, final.reason
    states = await runtime.router.server_states("web")
    assert {state.server for state in states} == {"v2-1"}
    assert "server v2-1" in ours.read_text()  # a reload of theirs keeps our servers
    assert hashlib.sha256(theirs.read_bytes()).hexdigest() == before
    assert tallies["other"].get("200", 0) > 0 and set(tallies["other"]) == {"200"}, tallies
    assert tallies["web"].get("200", 0) > 0, tallies


def config_yaml(config: Config) -> str:
    """The config as a YAML file (JSON is YAML), with the paths it had."""
    return config.model_dump_json(exclude={"base_dir"})

"""Logs through the local syslog daemon: a team's HAProxy logs to a real rsyslog, which relays a copy
to the collector. fridaymorning owns only the servers of the team's backend (`owns: servers`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fridaymorning.config import Config
from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.fleetlab import TEAM_DEFAULTS
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.testing import EVENT_DEADLINE_S, quick_service, quick_settings, wait_for

pytestmark = pytest.mark.haproxy

ONE_STEP = {"weight": 50, "min_duration_s": 3, "max_duration_s": 120, "min_requests": 50}

TEAM_CONFIG = (
    """\
global
    stats socket {admin} mode 600 level admin
    log 127.0.0.1:{relay} local0
"""
    + TEAM_DEFAULTS
    + """\
frontend www
    bind 127.0.0.1:{port}
    log global
    log-format "{log_format}"
    default_backend web
backend web
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
"""
)

# rsyslog with nothing of the system's: its own work directory, pid file and ports; it relays every
# line it receives to the collector in the traditional forwarding format (with a hostname).
RSYSLOG_CONFIG = """\
global(workDirectory="{workdir}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{relay}")
*.* action(type="omfwd" target="127.0.0.1" port="{collector}" protocol="udp"
           template="RSYSLOG_TraditionalForwardFormat")
"""


class Rsyslog:
    """A real rsyslogd in the foreground (`-n`) with the test's own config and pid file."""

    def __init__(self, directory: Path, relay: int, collector: int, binary: str) -> None:
        self.directory = directory
        self.config = directory / "rsyslog.conf"
        self.config.write_text(RSYSLOG_CONFIG.format(workdir=directory, relay=relay, collector=collector))
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.directory / "rsyslog.pid").unlink(missing_ok=True)
        argv = [self.binary, "-n", "-f", str(self.config), "-i", str(self.directory / "rsyslog.pid")]
        with (self.directory / "rsyslog.out").open("ab") as output:
            self.process = subprocess.Popen(
                argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=EVENT_DEADLINE_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Callable[[int, int], Rsyslog]]:
    binary = "/usr/sbin/rsyslogd"
    if not os.path.exists(binary):
        pytest.fail("rsyslogd is not installed. Install it with: sudo apt-get install -y rsyslog")
    made: list[Rsyslog] = []

    def make(relay: int, collector: int) -> Rsyslog:
        directory = tmp_path / "rsyslog"
        directory.mkdir(exist_ok=True)
        made.append(Rsyslog(directory, relay, collector, binary))
        made[-1].start()
        return made[-1]

    yield make
    for relay in made:
        relay.stop()


def relay_config(tmp_path: Path, admin: Path, frontend: int, collector: int, api: int) -> Config:
    return Config.model_validate(
        quick_settings(
            tmp_path / "state",
            quick_service("web", f"127.0.0.1:{frontend}", steps=[ONE_STEP]),
            haproxy={
                "instances": [{"name": "team", "admin": f"unix://{admin}"}],
                "owns": "servers",
                "team_config": "team.cfg",
            },
            collector={"listen": f"127.0.0.1:{collector}", "lateness_s": 0.5, "reconcile_interval_s": 5},
            api=f"127.0.0.1:{api}",
            base_dir=str(tmp_path),
        )
    )


async def test_logs_relayed_by_rsyslog_are_judged_and_their_loss_is_counted(
    tmp_path: Path,
    free_port: Callable[[], int],
    team_haproxies: Callable[..., Any],
    rsyslog: Callable[[int, int], Rsyslog],
    start_runtime: Any,
    background_requests: Callable[..., Any],
) -> None:
    """A rollout is judged on lines that came through rsyslog (its headers parsed); while the relay is
    down, the lines it loses show as missing in the reconciliation with HAProxy's counters."""
    admin, frontend, relay_port, collector_port = (
        tmp_path / "admin.sock",
        free_port(),
        free_port(),
        free_port(),
    )
    theirs = tmp_path / "team.cfg"
    theirs.write_text(
        TEAM_CONFIG.format(admin=admin, relay=relay_port, port=frontend, log_format=COMPACT_LOG_FORMAT)
    )
    config = relay_config(tmp_path, admin, frontend, collector_port, free_port())
    relay = rsyslog(relay_port, collector_port)
    haproxy = team_haproxies([theirs], str(admin), tmp_path / "haproxy.out")
    await haproxy.start()
    runtime = await start_runtime(config)
    url = f"http://127.0.0.1:{frontend}/"
    async with httpx.AsyncClient(timeout=10) as client, background_requests(client, {"web": url}) as tallies:
        runtime.controllers["web"].deploy("v2")
        final = await asyncio.wait_for(runtime.controllers["web"].wait(), 2 * EVENT_DEADLINE_S)
        assert final.phase is RolloutPhase.PROMOTED, final.reason
        relay.kill()
        sent = sum(tallies["web"].values())
        await wait_for(
            lambda: sum(tallies["web"].values()) >= sent + 100, "100 requests while the relay is down"
        )
        relay.start()

        def missing() -> Any:
            stats = runtime.status()["collector"].get("reconciliation") or {}
            return stats if stats.get("missing_lines", 0) > 0 else None

        stats = await wait_for(missing, "the lines lost in the relay counted as missing")
    assert set(tallies["web"]) == {"200"}, tallies
    assert stats["missing_lines"] <= sum(tallies["web"].values()), stats

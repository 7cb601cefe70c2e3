"""HAProxy instances fridaymorning does not own: a team's own HAProxy, and fleets of several.

A *brought* HAProxy is started, configured and reloaded by its team. fridaymorning writes only its
own file (`haproxy.include_file`: a `defaults` of its own and the services' backends), which the
team's HAProxy loads with a second `-f`, and moves traffic through the runtime API. The team's file is
never written. With `haproxy.owns: servers` the team's file declares the backends and fridaymorning
only adds, weighs and removes their servers at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from fridaymorning.config import Config
from fridaymorning.errors import ConfigError, MissingBinaryError
from fridaymorning.router._render import affinity_backends, backends_of, render_owned_config
from fridaymorning.router.base import ServerSpec
from fridaymorning.router.fleet import FleetRouter, Member
from fridaymorning.router.haproxy import HAProxyRouter, admin_address, write_atomically
from fridaymorning.router.process import alerts

# In the state directory: the desired state of the fleet and what each instance acknowledged.
FLEET_STATE_FILE = "fleet.json"


def include_path(config: Config) -> Path:
    """Where fridaymorning writes the file a brought HAProxy loads with its second `-f`."""
    return config.runtime_path(config.haproxy.include_file)


def writes_include_file(config: Config) -> bool:
    """True when some instance is brought and fridaymorning owns whole backends (writes its file)."""
    brought = any(instance.admin is not None for instance in config.haproxy.instances)
    return brought and config.haproxy.owns == "backends"


def write_include_file(config: Config, servers: Mapping[str, Sequence[ServerSpec]] | None = None) -> Path:
    """Write our backends (with `servers`, as HAProxy holds them now) atomically, mode 644."""
    path = include_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    ours = {backend: specs for backend, specs in (servers or {}).items() if backend in our_backends(config)}
    write_atomically(path, render_owned_config(config, ours))
    os.chmod(path, 0o644)  # the team's HAProxy may run as another user
    return path


def our_backends(config: Config) -> set[str]:
    return {backend for service in config.services for backend in backends_of(service)}


def check_with_team_config(config: Config) -> str:
    """`haproxy -c -f theirs -f ours` (ours rendered now, in a temporary file when fridaymorning owns
    backends); the check's output. A ConfigError with HAProxy's alerts when it refuses them."""
    theirs = config.team_config_path()
    if theirs is None:
        raise ConfigError("haproxy.team_config: name the team's haproxy.cfg to check it with ours")
    binary = shutil.which(config.haproxy.binary)
    if binary is None:
        raise MissingBinaryError(config.haproxy.binary, package="haproxy")
    with tempfile.TemporaryDirectory(prefix="fm-check-") as directory:
        argv = [binary, "-c", "-f", str(theirs)]
        if config.haproxy.owns == "backends":
            ours = Path(directory, "fridaymorning.cfg")
            ours.write_text(render_owned_config(config), encoding="utf-8")
            argv += ["-f", str(ours)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise ConfigError(f"haproxy.team_config: HAProxy refuses {theirs} with our file:\n{alerts(output)}")
    return output.strip()


def build_fleet(
    config: Config,
    managed: HAProxyRouter | None,
    on_change: Callable[[], Awaitable[object]] | None = None,
) -> FleetRouter:
    """The FleetRouter over `haproxy.instances`: `managed` for the one without `admin`, a router on
    the admin address of each brought one."""
    members = []
    for instance in config.haproxy.instances:
        if instance.admin is None:
            if managed is None:
                raise ConfigError(
                    f"haproxy.instances: {instance.name} has no admin address and no HAProxy runs"
                )
            members.append(Member(instance.name, managed, managed=True))
            continue
        router = HAProxyRouter(
            admin_address(instance.admin),
            check_interval_ms=config.haproxy.health_check_interval_ms,
            affinity_backends=affinity_backends(config),
        )
        members.append(Member(instance.name, router))
    return FleetRouter(
        members,
        state_path=config.state_path(FLEET_STATE_FILE),
        owned_backends=our_backends(config),
        on_change=on_change,
    )

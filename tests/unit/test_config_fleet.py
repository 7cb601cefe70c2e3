"""`haproxy.instances`, `owns`, `team_config` and `platform.host` in the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.config import parse_config
from fridaymorning.errors import ConfigError
from fridaymorning.router import render_owned_config

SERVICE = """
services:
  - name: web
    frontend: "127.0.0.1:8080"
    stable: v1
    platform: {command: [app, "{port}"], host: "10.0.0.1"}
    rollout: {steps: [{weight: 10}]}
"""


def config_with(haproxy: str) -> str:
    return f"haproxy:\n{haproxy}{SERVICE}"


def test_a_fleet_of_brought_and_managed_instances_is_read() -> None:
    """Unix and ipv4@ admin addresses, one instance without (managed), and the team's file."""
    config = parse_config(
        config_with(
            '  instances:\n    - {name: lb1, admin: "ipv4@10.0.0.2:9999"}\n'
            '    - {name: lb2, admin: "unix:///run/haproxy/admin.sock"}\n    - {name: own}\n'
            "  team_config: team/haproxy.cfg\n"
        ),
        "f.yaml",
        base_dir="/etc/fm",
    )
    assert [i.admin for i in config.haproxy.instances] == [
        "ipv4@10.0.0.2:9999",
        "unix:///run/haproxy/admin.sock",
        None,
    ]
    assert config.team_config_path() == Path("/etc/fm/team/haproxy.cfg")
    assert config.services[0].platform.host == "10.0.0.1"


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ("    - {name: a}\n    - {name: b}\n", "at most one instance without 'admin'"),
        ('    - {name: a, admin: "unix:///x"}\n    - {name: a, admin: "unix:///y"}\n', "unique"),
        ('    - {name: a, admin: "tcp://1.2.3.4:5"}\n', r"haproxy.instances\[0\].admin: expected unix:///"),
        ('    - {name: a, admin: "unix://relative"}\n', r"haproxy.instances\[0\].admin: expected unix:///"),
    ],
)
def test_bad_instances_are_refused_with_their_field(instances: str, message: str) -> None:
    """Two managed instances, a name given twice, an admin address of another kind: each refused."""
    with pytest.raises(ConfigError, match=message):
        parse_config(config_with(f"  instances:\n{instances}"), "f.yaml")


def test_platform_host_must_be_an_address() -> None:
    """platform.host is an IP address, not a name or a word."""
    with pytest.raises(ConfigError, match=r"platform\.host"):
        parse_config(SERVICE.replace('"10.0.0.1"', "somewhere"), "f.yaml")


def test_our_file_holds_only_a_defaults_section_and_our_backends() -> None:
    """The file a brought HAProxy loads: no global, no frontend; a defaults of its own first."""
    text = render_owned_config(parse_config(SERVICE, "f.yaml"))
    sections = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert sections == ["defaults fridaymorning", "backend web"]

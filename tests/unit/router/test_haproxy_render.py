"""render_haproxy_config: the haproxy.cfg text for a Config (HAProxy's own check is an integration test)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from fridaymorning.config import Config
from fridaymorning.errors import ConfigError
from fridaymorning.ingest.haproxy_log import COMPACT_LOG_FORMAT
from fridaymorning.router import render_haproxy_config

COLLECTOR = ("127.0.0.1", 5140)


def section(text: str, header: str) -> list[str]:
    """The settings of the section starting with `header`, stripped."""
    found = re.search(rf"^{re.escape(header)}\n((?:    .*\n)*)", text, re.MULTILINE)
    assert found is not None, f"no section {header!r} in:\n{text}"
    return [line.strip() for line in found.group(1).splitlines()]


def test_global_has_admin_socket_state_file_and_log_target(make_config: Callable[..., Config]) -> None:
    """global: admin socket at level admin, server-state file and log target, all resolved paths."""
    config = make_config()
    settings = section(render_haproxy_config(config, COLLECTOR), "global")
    socket = config.runtime_path("haproxy.sock")
    assert f"stats socket {socket} mode 600 level admin expose-fd listeners" in settings
    assert f"server-state-file {config.runtime_path('haproxy.state')}" in settings
    assert f"pidfile {config.state_path('haproxy.pid')}" in settings
    assert "log 127.0.0.1:5140 local0" in settings
    assert any(line.startswith("maxconn ") for line in settings)


def test_defaults_retry_and_load_state(make_config: Callable[..., Config]) -> None:
    """defaults: HTTP mode, server state loaded on start, redispatch and retries for going-away servers."""
    settings = section(render_haproxy_config(make_config(), COLLECTOR), "defaults")
    for expected in ("mode http", "load-server-state-from-file global", "option redispatch", "retries 2"):
        assert expected in settings
    assert not any(line.startswith(("log-format", "option httplog")) for line in settings)


def test_one_frontend_per_service_with_compact_log_format(make_config: Callable[..., Config]) -> None:
    """Each service gets a frontend on its address, logging in the compact format, to its own backend."""
    text = render_haproxy_config(make_config(), COLLECTOR)
    for name, port in (("web", 8080), ("api", 8081)):
        settings = section(text, f"frontend {name}")
        assert f"bind 127.0.0.1:{port}" in settings
        assert "log global" in settings
        assert f'log-format "{COMPACT_LOG_FORMAT}"' in settings
        assert f"default_backend {name}" in settings


def test_httplog_format_is_selectable(make_config: Callable[..., Config]) -> None:
    """log_format 'httplog' puts `option httplog` on the frontend instead of the compact log-format."""
    settings = section(render_haproxy_config(make_config(log_format="httplog"), COLLECTOR), "frontend web")
    assert "option httplog" in settings
    assert not any(line.startswith("log-format") for line in settings)


def test_backend_is_dynamic_with_http_checks_and_no_servers(make_config: Callable[..., Config]) -> None:
    """Each backend balances round-robin, checks health over HTTP, and declares no static server."""
    config = make_config(health_check_interval_ms=250)
    settings = section(render_haproxy_config(config, COLLECTOR), "backend web")
    assert settings == [
        "balance roundrobin",
        "option httpchk GET /healthz",
        "http-check expect status 200",
        "default-server inter 250ms fall 2 rise 1",
    ]


def test_ipv6_addresses_are_bracketed(make_config: Callable[..., Config]) -> None:
    """An IPv6 collector address is written in brackets, as HAProxy expects."""
    settings = section(render_haproxy_config(make_config(), ("::1", 5140)), "global")
    assert "log [::1]:5140 local0" in settings


@pytest.mark.parametrize("host", ["127.0.0.1 local0\n    stats", "a b", "", "-x"])
def test_collector_host_is_validated(make_config: Callable[..., Config], host: str) -> None:
    """A collector host that is neither an IP nor a host name is refused, so it cannot inject settings."""
    with pytest.raises(ConfigError, match="neither an IP address nor a host name"):
        render_haproxy_config(make_config(), (host, 5140))


def test_health_path_is_validated(make_config: Callable[..., Config]) -> None:
    """A health path with spaces (which would become extra httpchk arguments) is refused."""
    config = make_config()
    config.services[0].platform.health_path = "/health HTTP/1.1\\r\\nHost:x"
    with pytest.raises(ConfigError, match="health_path"):
        render_haproxy_config(config, COLLECTOR)


def test_runtime_path_with_space_is_refused(make_config: Callable[..., Config]) -> None:
    """A runtime path containing a space is refused: it would split into two arguments."""
    with pytest.raises(ConfigError, match=r"haproxy\.state_file"):
        render_haproxy_config(make_config(state_file="/tmp/my state"), COLLECTOR)


def test_too_long_admin_socket_path_is_refused(make_config: Callable[..., Config]) -> None:
    """An admin socket path longer than HAProxy 2.6 accepts (97 characters) is a ConfigError."""
    with pytest.raises(ConfigError, match="at most 97"):
        render_haproxy_config(make_config(admin_socket="/tmp/" + "s" * 100), COLLECTOR)

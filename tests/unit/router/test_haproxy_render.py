"""render_haproxy_config: the haproxy.cfg text for a Config (HAProxy's own check is an integration test)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from fridaymorning.config import Config
from fridaymorning.errors import ConfigError
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.router import (
    ServerSpec,
    ab_backend,
    affinity_backends,
    backends_of,
    render_haproxy_config,
)

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


# -- servers, A/B routing and affinity ---------------------------------------------------------------


def set_rollout(config: Config, **settings: object) -> Config:
    """`config` with its first service ('web') rolled out with `settings` (validated like the YAML)."""
    rollout = config.services[0].rollout.model_dump() | settings
    config.services[0].rollout = type(config.services[0].rollout).model_validate(rollout)
    return config


def test_server_spec_is_a_frozen_value() -> None:
    """ServerSpec compares by value and cannot be changed, so it can be shared and used as a key."""
    spec = ServerSpec("web", "v1-1", "127.0.0.1", 9001, 180)
    assert spec == ServerSpec("web", "v1-1", "127.0.0.1", 9001, 180)
    assert hash(spec) == hash(ServerSpec("web", "v1-1", "127.0.0.1", 9001, 180))
    with pytest.raises(AttributeError):
        spec.weight = 5  # type: ignore[misc]


def test_servers_are_rendered_as_static_lines(make_config: Callable[..., Config]) -> None:
    """The current servers become `server` lines, with their weight and the router's health checks."""
    config = make_config(health_check_interval_ms=250)
    servers = {
        "web": [ServerSpec("web", "v1-1", "127.0.0.1", 9001, 180), ServerSpec("web", "v2-1", "::1", 9002, 20)]
    }
    text = render_haproxy_config(config, COLLECTOR, servers)
    assert section(text, "backend web")[-2:] == [
        "server v1-1 127.0.0.1:9001 weight 180 check inter 250ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down",
        "server v2-1 [::1]:9002 weight 20 check inter 250ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down",
    ]
    assert not any(line.startswith("server ") for line in section(text, "backend api"))


def test_no_servers_renders_as_before(make_config: Callable[..., Config]) -> None:
    """Without servers (or with an empty mapping) the text is the one the runtime rendered at first start."""
    config = make_config()
    assert render_haproxy_config(config, COLLECTOR, {}) == render_haproxy_config(config, COLLECTOR)


def test_servers_of_an_unknown_backend_are_refused(make_config: Callable[..., Config]) -> None:
    """Servers for a backend the config does not define (e.g. a removed service) are a ConfigError."""
    servers = {"gone": [ServerSpec("gone", "v1-1", "127.0.0.1", 9001, 1)]}
    with pytest.raises(ConfigError, match="'gone'"):
        render_haproxy_config(make_config(), COLLECTOR, servers)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ServerSpec("web", "v1 1", "127.0.0.1", 9001, 1), "server name"),
        (ServerSpec("web", "v1-1", "127.0.0.1 backup", 9001, 1), "neither an IP address"),
        (ServerSpec("web", "v1-1", "127.0.0.1", 0, 1), "port"),
        (ServerSpec("web", "v1-1", "127.0.0.1", 9001, 257), "weight"),
        (ServerSpec("api", "v1-1", "127.0.0.1", 9001, 1), "listed under backend 'web'"),
    ],
)
def test_server_fields_are_validated(
    make_config: Callable[..., Config], spec: ServerSpec, message: str
) -> None:
    """A server whose name, address, port or weight could not be written safely is a ConfigError."""
    with pytest.raises(ConfigError, match=message):
        render_haproxy_config(make_config(), COLLECTOR, {"web": [spec]})


def test_duplicate_server_names_are_refused(make_config: Callable[..., Config]) -> None:
    """Two servers of one name in a backend would make HAProxy refuse the whole file."""
    spec = ServerSpec("web", "v1-1", "127.0.0.1", 9001, 1)
    with pytest.raises(ConfigError, match="unique"):
        render_haproxy_config(make_config(), COLLECTOR, {"web": [spec, spec]})


@pytest.mark.parametrize(
    ("ab", "condition"),
    [
        ({"header": "X-Canary", "value": "yes"}, "{ req.hdr(X-Canary) -m str yes }"),
        ({"cookie": "beta", "value": "on.1"}, "{ req.cook(beta) -m str on.1 }"),
    ],
    ids=["header", "cookie"],
)
def test_ab_routes_matched_requests_to_the_ab_backend(
    make_config: Callable[..., Config], ab: dict[str, str], condition: str
) -> None:
    """Strategy 'ab': the frontend sends requests matching the header (or cookie) to 'web__ab', which
    has the default backend's balance and health checks; the rest still go to 'web'."""
    config = set_rollout(make_config(), strategy="ab", ab=ab)
    servers = {"web__ab": [ServerSpec("web__ab", "v2-1", "127.0.0.1", 9002, 100)]}
    text = render_haproxy_config(config, COLLECTOR, servers)
    frontend = section(text, "frontend web")
    assert f"use_backend web__ab if {condition}" in frontend
    assert frontend[-1] == "default_backend web"
    assert section(text, "backend web__ab")[:-1] == section(text, "backend web")
    assert section(text, "backend web__ab")[-1].startswith("server v2-1 127.0.0.1:9002 weight 100 ")
    assert "backend api__ab" not in text and "use_backend" not in "".join(section(text, "frontend api"))
    assert backends_of(config.services[0]) == ["web", ab_backend("web")] == ["web", "web__ab"]


def test_ab_value_is_validated_again(make_config: Callable[..., Config]) -> None:
    """An A/B value changed after validation to something unsafe is refused, not written."""
    config = set_rollout(make_config(), strategy="ab", ab={"header": "X-Canary", "value": "yes"})
    assert config.services[0].rollout.ab is not None
    config.services[0].rollout.ab.value = "yes } || { always_true"
    with pytest.raises(ConfigError, match=r"rollout\.ab\.value"):
        render_haproxy_config(config, COLLECTOR)


def test_a_service_named_like_an_ab_backend_is_refused(make_config: Callable[..., Config]) -> None:
    """A service called 'web__ab' would collide with the A/B backend of 'web': a ConfigError."""
    config = set_rollout(make_config(), strategy="ab", ab={"header": "X-Canary", "value": "yes"})
    config.services[1].name = "web__ab"
    with pytest.raises(ConfigError, match="A/B backend"):
        render_haproxy_config(config, COLLECTOR)


def test_affinity_inserts_a_dynamic_cookie_in_every_backend_of_the_service(
    make_config: Callable[..., Config],
) -> None:
    """Affinity: each backend of the service inserts the cookie, computed per server (`dynamic`) from a
    key stable across restarts, so servers added at run time get one too; other services get none."""
    config = set_rollout(
        make_config(), strategy="ab", ab={"cookie": "beta", "value": "on"}, affinity={"cookie": "FMSERVER"}
    )
    servers = {"web": [ServerSpec("web", "v1-1", "127.0.0.1", 9001, 100)]}
    text = render_haproxy_config(config, COLLECTOR, servers)
    for backend in ("web", "web__ab"):
        settings = section(text, f"backend {backend}")
        assert "cookie FMSERVER insert indirect nocache dynamic" in settings
        assert "dynamic-cookie-key fridaymorning-web" in settings
    assert (
        section(text, "backend web")[-1]
        == "server v1-1 127.0.0.1:9001 weight 100 check inter 1000ms fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down"
    )
    assert not any(line.startswith("cookie") for line in section(text, "backend api"))
    assert affinity_backends(config) == ["web", "web__ab"]


def test_affinity_cookie_name_is_validated_again(make_config: Callable[..., Config]) -> None:
    """An affinity cookie name changed after validation to something unsafe is refused."""
    config = set_rollout(make_config(), affinity={"cookie": "FMSERVER"})
    assert config.services[0].rollout.affinity is not None
    config.services[0].rollout.affinity.cookie = "FM insert\n    server x"
    with pytest.raises(ConfigError, match=r"affinity\.cookie"):
        render_haproxy_config(config, COLLECTOR)

"""Render haproxy.cfg from the fridaymorning configuration.

A pure function: it reads the Config (and the servers the runtime found in HAProxy) and returns text.
Every value that reaches the file is either a number, a path we resolve, or a string checked against
a strict pattern first, so no setting can inject a directive.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from fridaymorning.config import ABConfig, Config, ServiceConfig, parse_address
from fridaymorning.errors import ConfigError
from fridaymorning.logformat import COMPACT_LOG_FORMAT
from fridaymorning.router.base import ServerSpec

# HAProxy 2.6 refuses a `stats socket` path longer than this (it keeps room for a temporary suffix).
MAX_SOCKET_PATH = 97

# How long a soft stop (SIGUSR1, reload) may wait for open connections before they are cut.
HARD_STOP_AFTER_S = 10

GLOBAL_MAXCONN = 1000

# Dynamic servers ignore `default-server`, so the router repeats these on every `add server`.
HEALTH_CHECK_FALL = 2
HEALTH_CHECK_RISE = 1

MAX_WEIGHT = 256

# The backend that receives the requests an A/B rollout matches: '<service>__ab'.
AB_BACKEND_SUFFIX = "__ab"

# Health-check paths go into `option httpchk` unquoted: only URL characters that need no quoting.
HEALTH_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/%?&=+-]*$")
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
# A runtime path is written unquoted after a keyword: no whitespace, quotes, '#' or backslashes.
PATH_PATTERN = re.compile(r"^[^\s\"'#\\]+$")
# Server names, as the router accepts them on the admin socket.
SERVER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Header and cookie names, and the A/B value, as config.py validates them (checked again: models are mutable).
HTTP_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
AB_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def render_haproxy_config(
    config: Config,
    collector_address: tuple[str, int],
    servers: Mapping[str, Sequence[ServerSpec]] | None = None,
) -> str:
    """The haproxy.cfg for `config`: per service, one frontend and its dynamic backend(s).

    Logs go to `collector_address` by UDP syslog, or through a ring over TCP. `servers` (backend →
    servers, as read from the running HAProxy) become static `server` lines: HAProxy forgets dynamic
    servers on a reload, so the file on disk must always list the current ones. Their runtime weights
    and admin states come back from the server-state file. A service with strategy 'ab' gets a second
    backend '<service>__ab'.
    """
    servers_by_backend = checked_servers(config, servers or {})
    interval_ms = config.haproxy.health_check_interval_ms
    sections = [render_global(config, collector_address), render_defaults()]
    if config.collector.protocol == "tcp":
        sections.append(render_ring(collector_address))
    for service in config.services:
        sections.append(render_frontend(service, config.haproxy.log_format))
        for backend in backends_of(service):
            sections.append(
                render_backend(service, interval_ms, backend, servers_by_backend.get(backend, ()))
            )
    return "\n".join(sections)


OWNED_FILE_HEADER = "# Written by fridaymorning: do not edit; it is rewritten after every change.\n"


def render_owned_config(config: Config, servers: Mapping[str, Sequence[ServerSpec]] | None = None) -> str:
    """The file a brought HAProxy loads with a second `-f`: only fridaymorning's backends.

    A `defaults` section of its own comes first, so the team's defaults (a `mode tcp`, other
    timeouts) do not change our backends, and ours do not reach any section of theirs (theirs come
    first in the command line). `servers` become static `server` lines with their current weights,
    so a reload of the team's HAProxy keeps them; the runtime rewrites the file after every change.
    With `haproxy.owns: servers` the team's file declares the backends, and this file is not used.
    """
    servers_by_backend = checked_servers(config, servers or {})
    interval_ms = config.haproxy.health_check_interval_ms
    sections = [OWNED_FILE_HEADER + render_owned_defaults()]
    for service in config.services:
        for backend in backends_of(service):
            sections.append(
                render_backend(service, interval_ms, backend, servers_by_backend.get(backend, ()))
            )
    return "\n".join(sections)


def render_owned_defaults() -> str:
    """The defaults of fridaymorning's backends inside a HAProxy it does not own."""
    return lines(
        "defaults fridaymorning",
        "mode http",
        "timeout connect 2s",
        "timeout client 30s",
        "timeout server 30s",
        "timeout queue 5s",
        "timeout check 2s",
        "option redispatch",
        "retries 2",
    )


def ab_backend(service_name: str) -> str:
    """The backend of the requests an A/B rollout of `service_name` matches: 'web' → 'web__ab'."""
    return service_name + AB_BACKEND_SUFFIX


def backends_of(service: ServiceConfig) -> list[str]:
    """The backends rendered for `service`: its own, and its A/B backend when the strategy is 'ab'."""
    if service.rollout.strategy == "ab":
        return [service.name, ab_backend(service.name)]
    return [service.name]


def affinity_backends(config: Config) -> list[str]:
    """The backends whose servers need a dynamic cookie (services with `rollout.affinity`)."""
    return [
        backend
        for service in config.services
        if service.rollout.affinity is not None
        for backend in backends_of(service)
    ]


def checked_servers(
    config: Config, servers: Mapping[str, Sequence[ServerSpec]]
) -> dict[str, Sequence[ServerSpec]]:
    """`servers` if every backend is rendered and every server fits its backend; else a ConfigError."""
    backends: dict[str, str] = {}
    for service in config.services:
        for backend in backends_of(service):
            if backend in backends:
                raise ConfigError(
                    f"services.{service.name}: backend {backend!r} is also the A/B backend of "
                    f"service {backends[backend]!r}; rename one of them"
                )
            backends[backend] = service.name
    for backend, specs in servers.items():
        if backend not in backends:
            raise ConfigError(f"servers given for backend {backend!r}, which the config does not define")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"backend {backend!r}: server names must be unique, got {names}")
        for spec in specs:
            if spec.backend != backend:
                raise ConfigError(f"server {spec.backend}/{spec.name} listed under backend {backend!r}")
    return dict(servers)


def render_global(config: Config, collector_address: tuple[str, int]) -> str:
    """The `global` section: admin socket, state file, pidfile and log target."""
    admin_socket = checked_path(config.runtime_path(config.haproxy.admin_socket), "haproxy.admin_socket")
    if len(str(admin_socket)) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"haproxy.admin_socket: the path {admin_socket} is {len(str(admin_socket))} characters long; "
            f"HAProxy accepts at most {MAX_SOCKET_PATH}. Choose a shorter state_dir or an absolute path."
        )
    state_file = checked_path(config.runtime_path(config.haproxy.state_file), "haproxy.state_file")
    pidfile = checked_path(config.state_path("haproxy.pid"), "state_dir")
    collector_host, collector_port = collector_address
    return lines(
        "global",
        f"stats socket {admin_socket} mode 600 level admin expose-fd listeners",
        f"server-state-file {state_file}",
        f"pidfile {pidfile}",
        log_target(config, collector_host, collector_port),
        f"maxconn {GLOBAL_MAXCONN}",
        f"hard-stop-after {HARD_STOP_AFTER_S}s",
        # Without this, a second HAProxy could bind the same port through SO_REUSEPORT and share traffic.
        "noreuseport",
    )


# The ring that buffers request logs for the TCP collector.
LOG_RING = "fmlogs"
LOG_RING_SIZE = 32 * 1024 * 1024  # bytes of lines kept while the collector catches up


def log_target(config: Config, collector_host: str, collector_port: int) -> str:
    """The global `log` line: straight to the collector by UDP, or into the ring forwarded by TCP."""
    if config.collector.protocol == "tcp":
        return f"log ring@{LOG_RING} local0"
    return f"log {format_address(collector_host, collector_port, 'collector')} local0"


def render_ring(collector_address: tuple[str, int]) -> str:
    """The ring forwarding request logs over TCP with octet-counted framing (RFC 6587)."""
    host, port = collector_address
    return lines(
        f"ring {LOG_RING}",
        'description "fridaymorning request logs"',
        "format rfc3164",
        "maxlen 2048",
        f"size {LOG_RING_SIZE}",
        "timeout connect 2s",
        "timeout server 10s",
        f"server collector {format_address(host, port, 'collector')} log-proto octet-count",
    )


def render_defaults() -> str:
    """The `defaults` section: HTTP mode, timeouts, state-file loading, and retries for drained servers."""
    return lines(
        "defaults",
        "mode http",
        "timeout connect 2s",
        "timeout client 30s",
        "timeout server 30s",
        "timeout http-request 10s",
        "timeout http-keep-alive 5s",
        "timeout queue 5s",
        "timeout check 2s",
        "load-server-state-from-file global",
        # On a reload the old worker closes idle keep-alive connections only after answering, so a
        # client that sends on one at that moment is not left without an answer.
        "option idle-close-on-response",
        # A connection refused by a server that is going away is retried on another one.
        "option redispatch",
        "retries 2",
        # So is a request whose server died under it (a killed container, a Swarm task replaced): no
        # answer at all, never an HTTP status, so a failing version's own 5xx are still seen and judged.
        "retry-on conn-failure empty-response",
    )


def render_frontend(service: ServiceConfig, log_format: str) -> str:
    """A service's frontend. Log settings live here, not in defaults, so only client traffic is logged."""
    host, port = parse_address(service.frontend)
    log_line = f'log-format "{COMPACT_LOG_FORMAT}"' if log_format == "compact" else "option httplog"
    routing = [f"default_backend {service.name}"]
    if service.rollout.strategy == "ab":
        condition = ab_condition(service.rollout.ab, f"services.{service.name}.rollout.ab")
        routing.insert(0, f"use_backend {ab_backend(service.name)} if {condition}")
    return lines(
        f"frontend {service.name}",
        f"bind {format_address(host, port, f'services.{service.name}.frontend')}",
        "log global",
        log_line,
        "option dontlognull",
        *routing,
    )


def ab_condition(ab: ABConfig | None, field: str) -> str:
    """The anonymous ACL matching the requests an A/B rollout sends to the canary."""
    if ab is None:
        raise ConfigError(f"{field}: strategy 'ab' needs a header or cookie to match")
    if not AB_VALUE_PATTERN.match(ab.value):
        raise ConfigError(f"{field}.value: {ab.value!r} may contain only letters, digits and ._-")
    if ab.header is not None:
        return f"{{ req.hdr({checked_token(ab.header, field + '.header')}) -m str {ab.value} }}"
    if ab.cookie is not None:
        return f"{{ req.cook({checked_token(ab.cookie, field + '.cookie')}) -m str {ab.value} }}"
    raise ConfigError(f"{field}: set a header or a cookie to match")


def render_backend(
    service: ServiceConfig,
    health_check_interval_ms: int,
    name: str | None = None,
    servers: Sequence[ServerSpec] = (),
) -> str:
    """A backend of `service` (its own unless `name` is given): a dynamic algorithm, HTTP health
    checks, the affinity cookie when configured, and `servers` as static servers."""
    health_path = service.platform.health_path
    if not HEALTH_PATH_PATTERN.match(health_path):
        raise ConfigError(
            f"services.{service.name}.platform.health_path: {health_path!r} may contain only "
            "letters, digits and ._~/%?&=+-"
        )
    return lines(
        f"backend {name or service.name}",
        "balance roundrobin",
        f"option httpchk GET {health_path}",
        "http-check expect status 200",
        *affinity_settings(service),
        f"default-server inter {health_check_interval_ms}ms "
        f"fall {HEALTH_CHECK_FALL} rise {HEALTH_CHECK_RISE}",
        *(render_server(server, health_check_interval_ms) for server in servers),
    )


def affinity_settings(service: ServiceConfig) -> list[str]:
    """The cookie that keeps a client on one server, or nothing without `rollout.affinity`.

    HAProxy 2.6 refuses `cookie` on `add server`, so every server's cookie is a *dynamic* one: a hash
    of the backend's key and the server's address and port. It is the same for a server added at run
    time (the router runs `enable dynamic-cookie backend` after `add server`) and for the static
    server it becomes after a reload, so a client stays on its server across reloads.
    """
    affinity = service.rollout.affinity
    if affinity is None:
        return []
    cookie = checked_token(affinity.cookie, f"services.{service.name}.rollout.affinity.cookie")
    return [
        f"cookie {cookie} insert indirect nocache dynamic",
        f"dynamic-cookie-key {dynamic_cookie_key(service)}",
    ]


def dynamic_cookie_key(service: ServiceConfig) -> str:
    """The secret mixed into the affinity cookies: stable across restarts, so cookies stay valid."""
    return f"fridaymorning-{service.name}"


def render_server(server: ServerSpec, health_check_interval_ms: int) -> str:
    """A static `server` line, with the same health checks the router gives a dynamic server."""
    field = f"server {server.backend}/{server.name}"
    if not SERVER_NAME_PATTERN.match(server.name):
        raise ConfigError(f"{field}: use letters, digits, '.', '_' and '-' only in a server name")
    if isinstance(server.port, bool) or not isinstance(server.port, int) or not 0 < server.port < 65536:
        raise ConfigError(f"{field}: a port must be an integer within 1..65535, got {server.port!r}")
    weight = server.weight
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise ConfigError(f"{field}: a weight must be an integer within 0..{MAX_WEIGHT}, got {weight!r}")
    return (
        f"server {server.name} {format_address(server.address, server.port, field)} weight {weight} "
        f"{health_check_options(health_check_interval_ms)}"
    )


def health_check_options(interval_ms: int) -> str:
    """The health-check settings of every server, static or added at run time.

    A refused or reset connection marks the server down at once (`observe layer4`), without waiting
    for `fall` failed checks: a crashed canary stops receiving requests within milliseconds.
    """
    return (
        f"check inter {interval_ms}ms fall {HEALTH_CHECK_FALL} rise {HEALTH_CHECK_RISE} "
        "observe layer4 error-limit 1 on-error mark-down"
    )


def format_address(host: str, port: int, field: str) -> str:
    """'host:port' for HAProxy, with brackets around an IPv6 address; refuses anything else."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME_PATTERN.match(host):
            raise ConfigError(f"{field}: {host!r} is neither an IP address nor a host name") from None
        return f"{host}:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def checked_token(token: str, field: str) -> str:
    """`token` if it is a safe header or cookie name, else a ConfigError naming `field`."""
    if not HTTP_TOKEN_PATTERN.match(token):
        raise ConfigError(f"{field}: {token!r} may contain only letters, digits, '_' and '-'")
    return token


def checked_path(path: Path, field: str) -> Path:
    """`path` if it can be written unquoted into haproxy.cfg, else a ConfigError naming `field`."""
    if not PATH_PATTERN.match(str(path)):
        raise ConfigError(f"{field}: the path {str(path)!r} must not contain spaces, quotes, '#' or '\\'")
    return path


def lines(header: str, *settings: str) -> str:
    """A section: its header, then each setting indented."""
    return "".join([f"{header}\n", *(f"    {setting}\n" for setting in settings)])

"""Render haproxy.cfg from the fridaymorning configuration.

A pure function: it reads the Config and returns text. Every value that reaches the file is either a
number, a path we resolve, or a string checked against a strict pattern first, so no setting can
inject a directive.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from fridaymorning.config import Config, ServiceConfig, parse_address
from fridaymorning.errors import ConfigError
from fridaymorning.ingest.haproxy_log import COMPACT_LOG_FORMAT

# HAProxy 2.6 refuses a `stats socket` path longer than this (it keeps room for a temporary suffix).
MAX_SOCKET_PATH = 97

# How long a soft stop (SIGUSR1, reload) may wait for open connections before they are cut.
HARD_STOP_AFTER_S = 10

GLOBAL_MAXCONN = 1000

# Dynamic servers ignore `default-server`, so the router repeats these on every `add server`.
HEALTH_CHECK_FALL = 2
HEALTH_CHECK_RISE = 1

# Health-check paths go into `option httpchk` unquoted: only URL characters that need no quoting.
HEALTH_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/%?&=+-]*$")
HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
# A runtime path is written unquoted after a keyword: no whitespace, quotes, '#' or backslashes.
PATH_PATTERN = re.compile(r"^[^\s\"'#\\]+$")


def render_haproxy_config(config: Config, collector_address: tuple[str, int]) -> str:
    """The haproxy.cfg for `config`: one frontend and one empty, dynamic backend per service.

    Logs go by UDP syslog to `collector_address`. Servers are never written here: the router adds
    them at run time, and the server-state file carries them across reloads.
    """
    sections = [render_global(config, collector_address), render_defaults()]
    for service in config.services:
        sections.append(render_frontend(service, config.haproxy.log_format))
        sections.append(render_backend(service, config.haproxy.health_check_interval_ms))
    return "\n".join(sections)


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
        f"log {format_address(collector_host, collector_port, 'collector')} local0",
        f"maxconn {GLOBAL_MAXCONN}",
        f"hard-stop-after {HARD_STOP_AFTER_S}s",
        # Without this, a second HAProxy could bind the same port through SO_REUSEPORT and share traffic.
        "noreuseport",
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
        # A connection refused by a server that is going away is retried on another one.
        "option redispatch",
        "retries 2",
    )


def render_frontend(service: ServiceConfig, log_format: str) -> str:
    """A service's frontend. Log settings live here, not in defaults, so only client traffic is logged."""
    host, port = parse_address(service.frontend)
    log_line = f'log-format "{COMPACT_LOG_FORMAT}"' if log_format == "compact" else "option httplog"
    return lines(
        f"frontend {service.name}",
        f"bind {format_address(host, port, f'services.{service.name}.frontend')}",
        "log global",
        log_line,
        "option dontlognull",
        f"default_backend {service.name}",
    )


def render_backend(service: ServiceConfig, health_check_interval_ms: int) -> str:
    """A service's backend: a dynamic algorithm, HTTP health checks, and no static servers."""
    health_path = service.platform.health_path
    if not HEALTH_PATH_PATTERN.match(health_path):
        raise ConfigError(
            f"services.{service.name}.platform.health_path: {health_path!r} may contain only "
            "letters, digits and ._~/%?&=+-"
        )
    return lines(
        f"backend {service.name}",
        "balance roundrobin",
        f"option httpchk GET {health_path}",
        "http-check expect status 200",
        f"default-server inter {health_check_interval_ms}ms "
        f"fall {HEALTH_CHECK_FALL} rise {HEALTH_CHECK_RISE}",
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


def checked_path(path: Path, field: str) -> Path:
    """`path` if it can be written unquoted into haproxy.cfg, else a ConfigError naming `field`."""
    if not PATH_PATTERN.match(str(path)):
        raise ConfigError(f"{field}: the path {str(path)!r} must not contain spaces, quotes, '#' or '\\'")
    return path


def lines(header: str, *settings: str) -> str:
    """A section: its header, then each setting indented."""
    return "".join([f"{header}\n", *(f"    {setting}\n" for setting in settings)])

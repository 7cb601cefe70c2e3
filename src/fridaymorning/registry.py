"""Implementations chosen by URL scheme, imported only when used.

Optional dependencies (docker, influx clients) are therefore imported only by those who choose them.
An unknown scheme is a ConfigError that lists the valid ones. The runtime builds every role through
here: the store from `store.url`, each service's platform from `platform.url`, the router from
`haproxy+unix://<admin socket>`, and each custom check's metric provider from its `provider` URL.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from fridaymorning.errors import ConfigError

# role -> scheme -> "module:attribute"
IMPLEMENTATIONS: dict[str, dict[str, str]] = {
    "store": {
        "sqlite": "fridaymorning.store.sqlite:SqliteMetricStore",
        "influxdb": "fridaymorning.store.influxdb:InfluxMetricStore",
        "victoriametrics": "fridaymorning.store.victoriametrics:VictoriaMetricsStore",
    },
    "router": {
        "haproxy+unix": "fridaymorning.router.haproxy:HAProxyRouter",
    },
    "platform": {
        "local": "fridaymorning.platform.local:LocalPlatform",
        "swarm": "fridaymorning.platform.swarm:SwarmPlatform",
        "swarm+unix": "fridaymorning.platform.swarm:SwarmPlatform",
        "swarm+tcp": "fridaymorning.platform.swarm:SwarmPlatform",
    },
    "provider": {
        "logs": "fridaymorning.providers.logs:LogMetricProvider",
        "prometheus": "fridaymorning.providers.prometheus:PrometheusProvider",
        "victoriametrics": "fridaymorning.providers.prometheus:PrometheusProvider",
        "influxdb": "fridaymorning.providers.influxdb:InfluxQLProvider",
    },
}


def scheme_of(url: str) -> str:
    """Return the scheme of `url`, e.g. 'sqlite' for 'sqlite:///var/lib/fm/metrics.db'."""
    return urlsplit(url).scheme


def check_scheme(role: str, url: str) -> str:
    """`url` when its scheme names an implementation of `role`; else a ValueError listing the valid ones.

    For config validators, which turn a ValueError into a message at the field.
    """
    if scheme_of(url) not in IMPLEMENTATIONS[role]:
        valid = ", ".join(f"{name}://" for name in sorted(IMPLEMENTATIONS[role]))
        raise ValueError(f"unknown {role} scheme in {url!r}; valid schemes: {valid}")
    return url


def resolve(role: str, url: str) -> Any:
    """Import and return the class that implements `role` for the scheme of `url`."""
    choices = IMPLEMENTATIONS.get(role)
    if choices is None:
        raise ConfigError(f"unknown role {role!r}; valid roles: {', '.join(sorted(IMPLEMENTATIONS))}")
    scheme = scheme_of(url)
    target = choices.get(scheme)
    if target is None:
        valid = ", ".join(f"{name}://" for name in sorted(choices))
        raise ConfigError(f"unknown {role} scheme in {url!r}; valid schemes: {valid}")
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)

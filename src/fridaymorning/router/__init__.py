"""The Router role and its HAProxy implementation."""

from fridaymorning.router._render import ab_backend, affinity_backends, backends_of, render_haproxy_config
from fridaymorning.router.base import Router, ServerSpec
from fridaymorning.router.haproxy import (
    HAProxyProcess,
    HAProxyRouter,
    StopTimeouts,
    split_weights,
    write_live_config,
)

__all__ = [
    "HAProxyProcess",
    "HAProxyRouter",
    "Router",
    "ServerSpec",
    "StopTimeouts",
    "ab_backend",
    "affinity_backends",
    "backends_of",
    "render_haproxy_config",
    "split_weights",
    "write_live_config",
]

"""The Router role and its HAProxy implementation."""

from fridaymorning.router._render import render_haproxy_config
from fridaymorning.router.base import Router
from fridaymorning.router.haproxy import HAProxyProcess, HAProxyRouter, StopTimeouts, split_weights

__all__ = [
    "HAProxyProcess",
    "HAProxyRouter",
    "Router",
    "StopTimeouts",
    "render_haproxy_config",
    "split_weights",
]

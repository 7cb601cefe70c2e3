"""The Router role, its HAProxy implementation, and the HAProxy process it talks to."""

from fridaymorning.router._render import ab_backend, affinity_backends, backends_of, render_haproxy_config
from fridaymorning.router._weights import weights_for_shares
from fridaymorning.router.base import Router, ServerSpec, Share
from fridaymorning.router.haproxy import HAProxyRouter, write_live_config
from fridaymorning.router.process import HAProxyProcess, StopTimeouts

__all__ = [
    "HAProxyProcess",
    "HAProxyRouter",
    "Router",
    "ServerSpec",
    "Share",
    "StopTimeouts",
    "ab_backend",
    "affinity_backends",
    "backends_of",
    "render_haproxy_config",
    "weights_for_shares",
    "write_live_config",
]

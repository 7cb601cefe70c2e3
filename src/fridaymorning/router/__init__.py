"""The Router role, its HAProxy implementation, and the HAProxy process it talks to."""

from fridaymorning.router._render import (
    ab_backend,
    affinity_backends,
    backends_of,
    render_haproxy_config,
    render_owned_config,
)
from fridaymorning.router._weights import weights_for_shares
from fridaymorning.router.base import Router, ServerSpec, Share
from fridaymorning.router.fleet import FleetRouter, Member
from fridaymorning.router.haproxy import HAProxyRouter, admin_address, write_live_config
from fridaymorning.router.process import HAProxyProcess, StopTimeouts

__all__ = [
    "FleetRouter",
    "HAProxyProcess",
    "HAProxyRouter",
    "Member",
    "Router",
    "ServerSpec",
    "Share",
    "StopTimeouts",
    "ab_backend",
    "admin_address",
    "affinity_backends",
    "backends_of",
    "render_haproxy_config",
    "render_owned_config",
    "weights_for_shares",
    "write_live_config",
]

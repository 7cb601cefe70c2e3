"""The public API of fridaymorning.router."""

from __future__ import annotations

import inspect

import fridaymorning.router as router
from fridaymorning.router.base import Router
from fridaymorning.router.fleet import FleetRouter
from fridaymorning.router.haproxy import HAProxyRouter


def test_all_lists_the_public_api() -> None:
    """__all__ names exactly what the package re-exports for the rest of fridaymorning."""
    assert sorted(router.__all__) == [
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
    assert all(hasattr(router, name) for name in router.__all__)


def test_haproxy_router_has_every_router_method() -> None:
    """HAProxyRouter and FleetRouter implement each method of the Router protocol, as coroutines."""
    for name, _ in inspect.getmembers(Router, inspect.isfunction):
        if not name.startswith("_"):
            assert inspect.iscoroutinefunction(getattr(HAProxyRouter, name)), name
            assert inspect.iscoroutinefunction(getattr(FleetRouter, name)), name

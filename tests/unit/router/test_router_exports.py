"""The public API of fridaymorning.router."""

from __future__ import annotations

import inspect

import fridaymorning.router as router
from fridaymorning.router.base import Router
from fridaymorning.router.fleet import FleetRouter
from fridaymorning.router.haproxy import HAProxyRouter


def test_all_lists_the_public_api() -> None:
    """__all__ names exactly what the package re-exports (every public name it imports but its
    submodules), and each name is there."""
    reexported = {
        name
        for name, value in vars(router).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(router.__all__) == sorted(reexported)
    assert {"Router", "HAProxyRouter", "FleetRouter", "HAProxyProcess", "weights_for_shares"} <= reexported


def test_haproxy_router_has_every_router_method() -> None:
    """HAProxyRouter and FleetRouter implement each method of the Router protocol, as coroutines."""
    for name, _ in inspect.getmembers(Router, inspect.isfunction):
        if not name.startswith("_"):
            assert inspect.iscoroutinefunction(getattr(HAProxyRouter, name)), name
            assert inspect.iscoroutinefunction(getattr(FleetRouter, name)), name

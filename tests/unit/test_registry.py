"""The registry: each role's implementations by URL scheme, as the runtime builds them."""

from __future__ import annotations

import pytest

from fridaymorning.errors import ConfigError
from fridaymorning.platform.local import LocalPlatform
from fridaymorning.registry import IMPLEMENTATIONS, resolve
from fridaymorning.router.haproxy import HAProxyRouter
from fridaymorning.store.sqlite import SqliteMetricStore


@pytest.mark.parametrize(
    ("role", "url", "implementation"),
    [
        ("store", "sqlite:///var/lib/fm/metrics.db", SqliteMetricStore),
        ("router", "haproxy+unix:///run/fm/haproxy.sock", HAProxyRouter),
        ("platform", "local://", LocalPlatform),
    ],
)
def test_each_role_resolves_its_scheme(role: str, url: str, implementation: type) -> None:
    """Every role the runtime builds resolves, by its URL's scheme, to its implementation."""
    assert resolve(role, url) is implementation


def test_every_entry_imports() -> None:
    """Each registered import string names a class that exists (a typo would fail only when chosen)."""
    for role, choices in IMPLEMENTATIONS.items():
        for scheme in choices:
            assert isinstance(resolve(role, f"{scheme}:///x"), type), (role, scheme)


def test_unknown_scheme_lists_the_valid_ones() -> None:
    """An unknown scheme is a ConfigError naming the valid schemes of that role."""
    with pytest.raises(ConfigError, match="valid schemes: local://"):
        resolve("platform", "k8s://cluster")

"""Helpers for HAProxy instances fridaymorning does not own: a team's HAProxy loading our file with a
second `-f`, network namespaces joined to this one by veth pairs, and a self-signed certificate.

Every namespace and veth gets a random suffix, so two test runs never collide, and is removed at
teardown. Traffic goes only to the addresses of these namespaces, or to loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fridaymorning.fleetlab import (
    Namespace,
    TeamHAProxy,
    create_namespaces,
    remove_namespaces,
    requests_while,
)


def required_binary(name: str, package: str) -> str:
    """The path of `name`, or fail the test with the command that installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' is not installed. Install it with: sudo apt-get install -y {package}")
    return path


@pytest.fixture
def team_haproxies() -> Iterator[Callable[..., TeamHAProxy]]:
    """A factory of TeamHAProxy; every one is stopped at teardown."""
    made: list[TeamHAProxy] = []

    def make(*args: Any, **kwargs: Any) -> TeamHAProxy:
        made.append(TeamHAProxy(*args, **kwargs))
        return made[-1]

    yield make
    for haproxy in made:
        haproxy.stop()


@pytest.fixture
def self_signed_pem() -> Callable[[Path], Path]:
    """`self_signed_pem(directory)`: see make_self_signed_pem."""
    return make_self_signed_pem


def make_self_signed_pem(directory: Path) -> Path:
    """A key and a self-signed certificate for 'localhost', in one PEM file as HAProxy's `crt` wants."""
    openssl = required_binary("openssl", "openssl")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pem = directory / "site.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    os.chmod(pem, 0o600)
    return pem


# --------------------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def namespaces() -> Iterator[Callable[[int], list[Namespace]]]:
    """`namespaces(n)`: n network namespaces, each with its own veth pair; removed at teardown."""
    if os.geteuid() != 0:
        pytest.fail("fleet tests create network namespaces and need root (run them as root)")
    made: list[Namespace] = []

    def make(count: int) -> list[Namespace]:
        made.extend(create_namespaces(count))
        return made[-count:]

    yield make
    remove_namespaces(made)


@pytest.fixture
def background_requests() -> Callable[..., Any]:
    """`async with background_requests(client, {name: url}) as tallies`: see requests_while."""
    return requests_while

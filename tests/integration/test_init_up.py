"""`fm init`, then `fm up`, as a new user runs them: the venv's `fm` with no venv activated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import fridaymorning
from fridaymorning import testing
from fridaymorning.testing import FmUpProcess

pytestmark = pytest.mark.haproxy

# `.venv/bin/fm` is the venv's interpreter running fridaymorning.cli:main. This launcher does the same,
# with the package under test put first on sys.path by the launcher itself: PYTHONPATH would be
# inherited by every instance fm starts, and so hide an instance command that needs the venv.
PACKAGE_ROOT = Path(fridaymorning.__file__).resolve().parents[1]
VENV_FM = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {str(PACKAGE_ROOT)!r}); "
    "from fridaymorning.cli import main; sys.exit(main())",
]


def without_venv(path: str) -> str:
    """PATH without the directory of this interpreter (the venv's bin), as when no venv is activated."""
    venv_bin = Path(sys.executable).parent.resolve()
    return os.pathsep.join(
        part for part in path.split(os.pathsep) if part and Path(part).resolve() != venv_bin
    )


def wait_until_answers(url: str, timeout_s: float) -> httpx.Response:
    """The first answer from `url` within `timeout_s`, however slow the machine; fails after it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_init_then_up_serves_without_an_activated_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: Callable[[], int], haproxy_binary: str
) -> None:
    """With no venv on PATH and nothing on PYTHONPATH, the config `fm init` writes starts: `fm up`
    starts the demo app's stable version with fm's own interpreter, and the frontend answers at once.
    Only the example's ports are moved to free ones, since other programs may hold the defaults."""
    monkeypatch.setenv("PATH", without_venv(os.environ["PATH"]))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(testing, "FM", VENV_FM)  # FmUpProcess runs `fm up` with this command

    init = subprocess.run([*VENV_FM, "init"], capture_output=True, text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stdout + init.stderr
    config = tmp_path / "fridaymorning.yaml"
    text = config.read_text()
    for default_port in ("8080", "8787", "5140"):
        assert f"127.0.0.1:{default_port}" in text
        text = text.replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{free_port()}")
    config.write_text(text)

    up = FmUpProcess(config, timeout_s=120)
    try:
        answer = wait_until_answers(up.frontend, timeout_s=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("X-Version") == "v1"
    finally:
        assert up.stop() == 0

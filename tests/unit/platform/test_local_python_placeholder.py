"""`{python}` in an instance command: the interpreter that runs fm, so no activated venv is needed."""

from __future__ import annotations

import sys
from pathlib import Path

from fridaymorning.config import parse_config
from fridaymorning.platform.local import build_argv

EXAMPLE = Path(__file__).parents[3] / "src" / "fridaymorning" / "example.yaml"


def test_python_placeholder_is_the_interpreter_running_fm() -> None:
    """`{python}` becomes sys.executable, whatever `python3` on PATH is, and stays one argument."""
    argv = build_argv(["{python}", "-m", "app", "--port", "{port}"], port=8123, version="v1", index=1)
    assert argv == [sys.executable, "-m", "app", "--port", "8123"]


def test_example_runs_the_demo_app_with_fms_interpreter() -> None:
    """The config `fm init` writes starts the demo app with fm's own interpreter, not the `python3` on
    PATH, which may lack fridaymorning when no venv is activated."""
    command = parse_config(EXAMPLE.read_text(), "example.yaml").services[0].platform.command
    argv = build_argv(command, port=8123, version="v1", index=1)
    assert argv[:3] == [sys.executable, "-m", "fridaymorning.demo.app"]

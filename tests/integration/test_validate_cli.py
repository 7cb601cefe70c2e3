"""`fm validate` as a user runs it: a bad file is exit 2, with file:line for every problem, no traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fridaymorning.testing import FM

EXAMPLE = (Path(__file__).parents[2] / "src" / "fridaymorning" / "example.yaml").read_text()


def validate(path: Path) -> tuple[int, str]:
    """`fm validate PATH` on a wide console (how long lines wrap is not what these tests pin down): its
    exit code and its stderr."""
    command = [*FM, "validate", str(path)]
    env = {**os.environ, "COLUMNS": "1000"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    return result.returncode, result.stderr


def test_non_utf8_config_exits_2_with_its_line(tmp_path: Path) -> None:
    """A Latin-1 byte in the file is exit 2 with the file and line on stderr, and no traceback."""
    path = tmp_path / "fridaymorning.yaml"
    path.write_bytes(EXAMPLE.replace("stable: v1 ", "stable: v1 # caf\u00e9 ", 1).encode("latin-1"))
    code, stderr = validate(path)
    line = next(number for number, text in enumerate(EXAMPLE.splitlines(), 1) if "stable: v1" in text)
    assert code == 2, stderr
    assert f"{path}:{line}: byte 0xe9" in stderr
    assert "Traceback" not in stderr


def test_every_problem_is_on_stderr_with_exit_2(tmp_path: Path) -> None:
    """A duplicate key, a quoted number, a misspelt key and a frontend on the API's port are all reported
    in one run, each with the file and its line."""
    text = (
        EXAMPLE.replace("    stable: v1 ", "    stable: v1\n    stable: v2 ", 1)
        .replace("weight: 25,", 'weight: "25",', 1)
        .replace("  binary: haproxy", "  binry: haproxy", 1)
        .replace("frontend: 127.0.0.1:8080", "frontend: 0.0.0.0:8787", 1)
    )
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(text)
    code, stderr = validate(path)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    for anchor, field in [
        ("binry", "haproxy.binry"),
        ("frontend:", "services[0].frontend"),
        ("stable: v2", "services[0].stable"),
        ('"25"', "services[0].rollout.steps[1].weight"),
    ]:
        line = next(number for number, content in enumerate(text.splitlines(), 1) if anchor in content)
        assert f"{path}:{line}: {field}: " in stderr, (field, stderr)

"""How LocalPlatform turns the configured command into what is executed: argv and environment."""

from __future__ import annotations

import sys
import tempfile

import pytest

import fridaymorning.platform
from fridaymorning.platform.local import (
    build_argv,
    build_env,
    describe_exit,
    find_program,
    looks_like_address_in_use,
    tail_lines,
)


def test_placeholders_are_replaced_in_every_element() -> None:
    """{port}, {version} and {index} are substituted wherever they appear, also inside an element."""
    argv = build_argv(
        ["app", "--listen=127.0.0.1:{port}", "--name", "{version}-{index}"], port=8123, version="v2", index=3
    )
    assert argv == ["app", "--listen=127.0.0.1:8123", "--name", "v2-3"]


def test_elements_are_never_split_or_interpreted_like_a_shell() -> None:
    """Spaces, quotes, `;` and `$` stay inside their one argument: there is no shell to interpret them."""
    template = ["app", "--greeting", "hello world; rm -rf / $HOME '{version}'", "{port}"]
    argv = build_argv(template, port=1, version="v1", index=1)
    assert argv == ["app", "--greeting", "hello world; rm -rf / $HOME 'v1'", "1"]
    assert len(argv) == len(template)


def test_doubled_braces_stay_literal() -> None:
    """`{{` and `}}` produce literal braces, as str.format defines, e.g. for a JSON argument."""
    assert build_argv(['{{"port": {port}}}'], port=9, version="v1", index=1) == ['{"port": 9}']


def test_environment_layers_fm_then_config_then_instance_variables() -> None:
    """The child sees fm's environment, overridden by config.env, then FM_VERSION/FM_PORT/FM_INDEX."""
    env = build_env(
        {"COLOR": "blue", "FM_PORT": "ignored"},
        port=8123,
        version="v3",
        index=2,
        base={"PATH": "/bin", "COLOR": "red"},
    )
    assert env == {"PATH": "/bin", "COLOR": "blue", "FM_VERSION": "v3", "FM_PORT": "8123", "FM_INDEX": "2"}


def test_find_program_resolves_on_path_and_rejects_missing_ones() -> None:
    """A bare name is looked up on the child's PATH; a path must exist and be executable."""
    assert find_program(sys.executable, {}) == sys.executable
    assert find_program("sh", {"PATH": "/usr/bin:/bin"}) is not None
    assert find_program("fm-no-such-program", {"PATH": "/usr/bin:/bin"}) is None
    assert find_program("/nonexistent/fm-no-such-program", {}) is None


def test_tail_lines_returns_the_last_lines_only() -> None:
    """The failure message quotes only the end of a long stderr."""
    with tempfile.TemporaryFile() as stderr:
        stderr.write(b"".join(f"line {number}\n".encode() for number in range(100)))
        stderr.flush()
        assert tail_lines(stderr, max_lines=3) == "line 97\nline 98\nline 99"


def test_tail_lines_of_an_empty_file_is_empty() -> None:
    """A child that wrote nothing gives an empty tail, not an error."""
    with tempfile.TemporaryFile() as stderr:
        assert tail_lines(stderr) == ""


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("OSError: [Errno 98] Address already in use", True),
        ("listen tcp 127.0.0.1:80: bind: address already in use", True),
        ("Error: listen EADDRINUSE: address already in use :::3000", True),
        ("ModuleNotFoundError: No module named 'app'", False),
    ],
)
def test_address_in_use_is_recognised_across_runtimes(stderr: str, expected: bool) -> None:
    """Python, Go and Node wordings of a lost port race all trigger the one retry; other errors do not."""
    assert looks_like_address_in_use(stderr) is expected


def test_exit_descriptions_distinguish_codes_from_signals() -> None:
    """A negative asyncio return code is reported as the signal that killed the child."""
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "killed by SIGKILL"


def test_package_exports_exactly_its_public_api() -> None:
    """`fridaymorning.platform.__all__` lists names that exist, and the protocol is among them."""
    assert set(fridaymorning.platform.__all__) == {"LocalPlatform", "Platform", "cleanup_stale"}
    for name in fridaymorning.platform.__all__:
        assert getattr(fridaymorning.platform, name) is not None

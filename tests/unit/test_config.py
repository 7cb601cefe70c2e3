"""Config validation: good files load, bad ones name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.config import load_config, parse_config
from fridaymorning.errors import ConfigError

EXAMPLE = (Path(__file__).parents[2] / "src" / "fridaymorning" / "example.yaml").read_text()


def test_example_config_is_valid() -> None:
    """The commented example that `fm init` writes validates as it is."""
    config = parse_config(EXAMPLE, "example.yaml")
    assert config.services[0].name == "web"
    assert [step.weight for step in config.services[0].rollout.steps] == [5, 25, 50]


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        ("weight: 25", "weight: 250", 41, "services[0].rollout.steps[1].weight"),
        ("frontend: 127.0.0.1:8080", "frontend: nope", 26, "services[0].frontend"),
        ("  binary: haproxy", "  binry: haproxy", 8, "haproxy.binry"),
        ("stable: v1 ", "stable: 'v 1' ", 27, "services[0].stable"),
        ('"{port}"', '"8080"', 31, "services[0].platform.command"),
        ("url: sqlite:///metrics.db", "url: mysql://db/metrics", 19, "store.url"),
        ("weight: 50, min_duration_s: 60", "weight: 20, min_duration_s: 60", 39, "services[0].rollout.steps"),
        (
            "max_duration_s: 600, min_requests: 200",
            "max_duration_s: 6, min_requests: 200",
            40,
            "services[0].rollout.steps[0]",
        ),
    ],
)
def test_errors_name_file_line_and_field(old: str, new: str, line: int, field: str) -> None:
    """Each invalid setting is reported with the file name, its line, and its dotted field path."""
    assert old in EXAMPLE
    with pytest.raises(ConfigError) as raised:
        parse_config(EXAMPLE.replace(old, new, 1), "fridaymorning.yaml")
    message = str(raised.value)
    assert message.startswith(f"fridaymorning.yaml:{line}: {field}"), message


def test_yaml_syntax_error_has_line() -> None:
    """Broken YAML is a ConfigError with the line where the parser found the problem, not a traceback."""
    with pytest.raises(ConfigError, match=r"^bad.yaml:4: YAML syntax error"):
        parse_config("services:\n  - name: web\n    frontend: [oops\n", "bad.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config that cannot be read names the path."""
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    """Runtime paths and the sqlite store live under state_dir next to the config file."""
    path = tmp_path / "fridaymorning.yaml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.runtime_path(config.haproxy.admin_socket) == tmp_path / ".fm" / "haproxy.sock"
    assert config.store_url() == f"sqlite:///{tmp_path}/.fm/metrics.db"


def test_service_lookup_needs_a_name_when_several_exist() -> None:
    """With two services, commands must say which one; an unknown name lists the valid ones."""
    two = EXAMPLE.replace("services:\n", "services:\n" + second_service(), 1)
    config = parse_config(two, "two.yaml")
    with pytest.raises(ConfigError, match="several services"):
        config.service(None)
    with pytest.raises(ConfigError, match="api, web"):
        config.service("nope")
    assert config.service("api").frontend == "127.0.0.1:8081"


def second_service() -> str:
    return (
        "  - name: api\n"
        "    frontend: 127.0.0.1:8081\n"
        "    stable: v1\n"
        "    platform: {command: [app, '{port}']}\n"
        "    rollout: {steps: [{weight: 50}]}\n"
    )

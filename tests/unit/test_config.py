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
    ("old", "new", "anchor", "field"),
    [
        ("weight: 25", "weight: 250", "weight: 250", "services[0].rollout.steps[1].weight"),
        ("frontend: 127.0.0.1:8080", "frontend: nope", "frontend: nope", "services[0].frontend"),
        ("  binary: haproxy", "  binry: haproxy", "binry", "haproxy.binry"),
        ("stable: v1 ", "stable: 'v 1' ", "stable: 'v 1'", "services[0].stable"),
        ('"{port}"', '"8080"', '"8080"', "services[0].platform.command"),
        ("url: sqlite:///metrics.db", "url: mysql://db/metrics", "mysql://", "store.url"),
        (
            "weight: 50, min_duration_s: 60",
            "weight: 20, min_duration_s: 60",
            "steps:",
            "services[0].rollout.steps",
        ),
        (
            "max_duration_s: 600, min_requests: 200",
            "max_duration_s: 6, min_requests: 200",
            "max_duration_s: 6,",
            "services[0].rollout.steps[0]",
        ),
    ],
)
def test_errors_name_file_line_and_field(old: str, new: str, anchor: str, field: str) -> None:
    """Each invalid setting is reported with the file name, the line it is on, and its dotted field path."""
    assert old in EXAMPLE
    text = EXAMPLE.replace(old, new, 1)
    line = next(number for number, content in enumerate(text.splitlines(), 1) if anchor in content)
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "fridaymorning.yaml")
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


def rollout_error(rollout_yaml: str) -> str:
    """The error message of the example config with its rollout section replaced."""
    text = EXAMPLE
    start = text.index("    rollout:")
    end = text.index("    analysis:")
    with pytest.raises(ConfigError) as raised:
        parse_config(text[:start] + rollout_yaml + text[end:], "f.yaml")
    return str(raised.value)


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ("    rollout: {strategy: ab, steps: [{weight: 10}]}\n", "strategy 'ab' needs an 'ab' section"),
        ("    rollout: {steps: [{weight: 10}, {weight: 60}], fresh_baseline: true}\n", "at most 50"),
        ("    rollout: {steps: [{weight: 10}], step_weight: 10, max_weight: 50}\n", "not both"),
        ("    rollout: {}\n", "give 'steps'"),
        ("    rollout: {steps: [{weight: 10}], ab: {header: X, cookie: y, value: '1'}}\n", "exactly one"),
        ("    rollout: {steps: [{weight: 10}], affinity: {cookie: 'bad cookie'}}\n", "affinity.cookie"),
    ],
)
def test_strategy_errors(rollout: str, message: str) -> None:
    """Inconsistent strategy settings are refused with a reason."""
    assert message in rollout_error(rollout)


def test_step_weight_and_max_weight_generate_steps() -> None:
    """step_weight/max_weight (Flagger's spelling) expand into steps, the last one at max_weight."""
    text = EXAMPLE[: EXAMPLE.index("    rollout:")] + (
        "    rollout: {step_weight: 15, max_weight: 50, step_min_duration_s: 10, step_min_requests: 300}\n"
    )
    steps = parse_config(text, "f.yaml").services[0].rollout.steps
    assert [(s.weight, s.min_duration_s, s.min_requests) for s in steps] == [
        (15, 10, 300),
        (30, 10, 300),
        (45, 10, 300),
        (50, 10, 300),
    ]


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ("{name: h, kind: rollout}", "exactly one of 'url', 'command' or 'load_test'"),
        ("{name: h, kind: rollout, url: 'http://x', command: [a]}", "exactly one"),
        ("{name: h, kind: pre_rollout, load_test: {rate_per_s: 5}}", "must be of kind 'rollout'"),
        ("{name: h, kind: sometimes, command: [a]}", "hooks[0].kind"),
        ("{name: h, kind: rollout, url: 'ftp://x'}", "hooks[0].url"),
    ],
)
def test_hook_errors(hook: str, message: str) -> None:
    """A hook has exactly one form, a known kind, and an http(s) URL."""
    text = EXAMPLE + f"    hooks: [{hook}]\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "f.yaml")
    assert message in str(raised.value)

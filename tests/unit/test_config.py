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
    assert [step.weight for step in config.services[0].rollout.steps] == [10, 25, 50]


@pytest.mark.parametrize(
    ("old", "new", "anchor", "field"),
    [
        ("weight: 25", "weight: 250", "weight: 250", "services[0].rollout.steps[1].weight"),
        ("frontend: 127.0.0.1:8080", "frontend: nope", "frontend: nope", "services[0].frontend"),
        ("  binary: haproxy", "  binry: haproxy", "binry", "haproxy.binry"),
        ("stable: v1 ", "stable: 'v 1' ", "stable: 'v 1'", "services[0].stable"),
        ('"{port}"', '"8080"', '"8080"', "services[0].platform.command"),
        ("url: sqlite:///metrics.db", "url: mysql://db/metrics", "mysql://", "store.url"),
        ("url: local://", "url: k8s://cluster", "k8s://", "services[0].platform.url"),
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


def line_with(text: str, anchor: str, occurrence: int = 1) -> int:
    """The 1-based line of the `occurrence`-th line of `text` containing `anchor`."""
    found = [number for number, content in enumerate(text.splitlines(), 1) if anchor in content]
    return found[occurrence - 1]


def config_errors(text: str, filename: str = "f.yaml") -> list[str]:
    """The lines of the ConfigError that `text` raises."""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, filename)
    return str(raised.value).splitlines()


def test_non_utf8_file_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    """A file with bytes that are not UTF-8 (here Latin-1 'é' on the stable line) is a ConfigError naming
    the file and the line, not a UnicodeDecodeError."""
    path = tmp_path / "latin1.yaml"
    text = EXAMPLE.replace("stable: v1 ", "stable: v1 # caf\u00e9 ", 1)
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}:{line_with(text, 'stable: v1')}: "), raised.value
    assert "0xe9" in str(raised.value) and "UTF-8" in str(raised.value)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 file that starts with a byte order mark (as some editors write) loads."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.encode())
    assert load_config(path).services[0].stable == "v1"


def test_control_character_is_a_config_error_with_its_line() -> None:
    """A character YAML forbids (a NUL byte) is a ConfigError with its line, not a ReaderError."""
    text = EXAMPLE.replace("stable: v1 ", "stable: v\x001 ", 1)
    assert config_errors(text) == [
        f"f.yaml:{line_with(text, 'stable: v')}: character U+0000 is not allowed in YAML"
    ]


@pytest.mark.parametrize(
    ("old", "new", "anchor", "field"),
    [
        ("    stable: v1 ", "    stable: v1\n    stable: v2 ", "stable: v2", "services[0].stable"),
        ("api:\n", "api:\n  listen: 127.0.0.1:8788\n", "listen: 127.0.0.1:8787", "api.listen"),
        ("store:\n", "collector: {}\nstore:\n", "collector: {}", "collector"),
        (
            "weight: 10, ",
            "weight: 10, weight: 6, ",
            "weight: 10, weight: 6",
            "services[0].rollout.steps[0].weight",
        ),
    ],
)
def test_duplicate_keys_are_errors_at_the_duplicate(old: str, new: str, anchor: str, field: str) -> None:
    """A key given twice in one mapping, at any depth and in block or flow style, is an error at the line
    of the second one, which names the line of the first; YAML alone would keep the last silently."""
    text = EXAMPLE.replace(old, new, 1)
    errors = config_errors(text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"f.yaml:{line_with(text, anchor)}: {field}: duplicate key"), errors


def test_every_problem_is_reported_at_once_each_with_its_line_and_field() -> None:
    """Misspelt keys are reported together with every other error in the file, in file order, one per
    line; none hides another."""
    text = (
        EXAMPLE.replace("  binary: haproxy", "  binry: haproxy", 1)
        .replace("weight: 25,", "weight: 250,", 1)
        .replace("      replicas: 1", "      replica: 1", 1)
        .replace("quantiles: [0.5, 0.9, 0.99]", "quantiles: [0.5, 0.9, 0.99]\n      alpah: 0.01", 1)
    )
    assert config_errors(text) == [
        f"f.yaml:{line_with(text, 'binry')}: haproxy.binry: unknown key; did you mean 'binary'?",
        f"f.yaml:{line_with(text, 'replica: 1')}: services[0].platform.replica: unknown key; "
        "did you mean 'replicas'?",
        f"f.yaml:{line_with(text, 'weight: 250')}: services[0].rollout.steps[1].weight: "
        "Input should be less than or equal to 100",
        f"f.yaml:{line_with(text, 'alpah')}: services[0].analysis.alpah: unknown key; did you mean 'alpha'?",
    ]


def test_unknown_key_far_from_any_lists_the_valid_keys() -> None:
    """An unknown key with no near spelling lists the keys valid at that place."""
    text = EXAMPLE.replace("store:\n", "store:\n  colour: blue\n", 1)
    assert config_errors(text) == [
        f"f.yaml:{line_with(text, 'colour')}: store.colour: unknown key; valid keys here: url"
    ]


@pytest.mark.parametrize(
    ("old", "new", "anchor", "field", "hint"),
    [
        ("weight: 25,", 'weight: "25",', '"25"', "services[0].rollout.steps[1].weight", "got the text '25'"),
        ("alpha: 0.01", "alpha: '0.01'", "alpha:", "services[0].analysis.alpha", "got the text '0.01'"),
        ("replicas: 1", 'replicas: "2"', "replicas:", "services[0].platform.replicas", "without quotes"),
        (
            "health_timeout_s: 20",
            "health_timeout_s: '20'",
            "health_timeout_s",
            "services[0].platform",
            "quotes",
        ),
        (
            "min_requests: 200}",
            "min_requests: 200, approval: 'true'}",
            "'true'",
            "services[0]",
            "true or false",
        ),
        ("lateness_s: 1.0", "lateness_s: 1.0e+0s", "lateness_s", "collector.lateness_s", "got the text"),
        ("stable: v1 ", "stable: 1.10 ", "stable: 1.10", "services[0].stable", "put text in quotes"),
        ("replicas: 1", "replicas: 1.5", "replicas:", "services[0].platform.replicas", "valid integer"),
    ],
)
def test_types_are_strict(old: str, new: str, anchor: str, field: str, hint: str) -> None:
    """No coercion between text and numbers: a quoted number where a number belongs, or a number where
    text belongs, is an error with its line, its field and a hint on how to write it."""
    text = EXAMPLE.replace(old, new, 1)
    errors = config_errors(text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"f.yaml:{line_with(text, anchor)}: {field}"), errors
    assert hint in errors[0], errors


def test_whole_numbers_are_accepted_where_decimals_belong() -> None:
    """Strictness refuses text, not precision: `health_timeout_s: 20` is a float field given an int."""
    assert parse_config(EXAMPLE, "f.yaml").services[0].platform.health_timeout_s == 20.0


@pytest.mark.parametrize(
    ("command", "anchor", "expected"),
    [
        (
            '["{python}", -m, app, --port, {port}]',
            "{port}]",
            "platform.command[4]: Input should be a valid string; "
            'YAML reads an unquoted {port} as a mapping; quote it: "{port}"',
        ),
        (
            "\n        - '{python}'\n        - {port}",
            "- {port}",
            "platform.command[1]: Input should be a valid string; "
            'YAML reads an unquoted {port} as a mapping; quote it: "{port}"',
        ),
        (
            '[app, --port={port}, "{version}"]',
            "--port={port}",
            "YAML syntax error: expected ',' or ']', but got '{'; "
            'a {placeholder} must be quoted in YAML, quote it: "--port={port}"',
        ),
        (
            '[app, "{port}", {version}-x]',
            "{version}-x",
            "YAML syntax error: expected ',' or ']', but got "
            "'<scalar>'; a {placeholder} must be quoted in YAML, quote it: \"{version}-x\"",
        ),
    ],
)
def test_unquoted_placeholder_gets_a_hint(command: str, anchor: str, expected: str) -> None:
    """A {placeholder} outside quotes is YAML syntax (a flow mapping, or a parse error): the error says to
    quote it, on the placeholder's line."""
    text = EXAMPLE.replace(
        'command: ["{python}", -m, fridaymorning.demo.app, --port, "{port}", --version, "{version}"]',
        f"command: {command}",
        1,
    )
    errors = config_errors(text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"f.yaml:{line_with(text, anchor)}: "), errors
    assert errors[0].endswith(expected), errors


def test_quoted_placeholder_in_a_comment_or_string_is_not_blamed() -> None:
    """The hint names the unquoted word only; quoted placeholders and comments on the line are left out."""
    text = EXAMPLE.replace('"{version}"]', '"{version}", --name={index}]  # "{port}" works', 1)
    errors = config_errors(text)
    assert errors[0].endswith('quote it: "--name={index}"'), errors


def test_python_placeholder_is_valid_and_unknown_placeholders_are_named() -> None:
    """{python} is a known placeholder of the instance command; an unknown one lists the four that exist."""
    assert parse_config(EXAMPLE, "f.yaml").services[0].platform.command[0] == "{python}"
    errors = config_errors(EXAMPLE.replace('"{python}"', '"{interpreter}"', 1))
    assert "only {port}, {version}, {index} and {python} exist" in errors[0], errors


@pytest.mark.parametrize(
    ("changes", "anchor", "field", "other"),
    [
        (
            {"listen: 127.0.0.1:8787": "listen: 127.0.0.1:8080"},
            "frontend:",
            "services[0].frontend",
            "api.listen",
        ),
        (
            {"frontend: 127.0.0.1:8080": "frontend: 0.0.0.0:8787"},
            "frontend:",
            "services[0].frontend",
            "api.listen",
        ),
        (
            {"listen: 127.0.0.1:8787": "listen: '[::]:8080'"},
            "frontend:",
            "services[0].frontend",
            "api.listen",
        ),
        (
            {"frontend: 127.0.0.1:8080": "frontend: '*:8787'"},
            "frontend:",
            "services[0].frontend",
            "api.listen",
        ),
        (
            {"listen: 127.0.0.1:8787": "listen: localhost:8080"},
            "frontend:",
            "services[0].frontend",
            "api.listen",
        ),
        (
            {"protocol: udp": "protocol: tcp", "listen: 127.0.0.1:5140": "listen: 0.0.0.0:8787"},
            "listen: 127.0.0.1:8787",
            "api.listen",
            "collector.listen",
        ),
        (
            {
                "services:\n": "services:\n" + "  - {name: api, frontend: '127.0.0.1:8080', stable: v1, "
                "platform: {command: [a, '{port}']}, rollout: {steps: [{weight: 5}]}}\n"
            },
            "frontend: 127.0.0.1:8080 ",
            "services[1].frontend",
            "services[0].frontend",
        ),
        (
            {
                "api:\n  listen: 127.0.0.1:8787": "api: {}",
                "frontend: 127.0.0.1:8080": "frontend: 127.0.0.1:8787",
            },
            "frontend:",
            "services[0].frontend",
            "api.listen 127.0.0.1:8787/tcp (its default)",
        ),
    ],
)
def test_listen_addresses_that_share_a_socket_are_errors(
    changes: dict[str, str], anchor: str, field: str, other: str
) -> None:
    """Frontends, the API and the collector may not take the same socket: the same address and port, or
    a wildcard (0.0.0.0, *, ::) and an address on the same port. The error is on the later line and
    names the other listener."""
    text = EXAMPLE
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    errors = config_errors(text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"f.yaml:{line_with(text, anchor)}: {field}: "), errors
    assert "takes the same socket as " + other in errors[0], errors


@pytest.mark.parametrize(
    "changes",
    [
        {"listen: 127.0.0.1:5140": "listen: 127.0.0.1:8080"},  # UDP collector beside a TCP frontend
        {"listen: 127.0.0.1:8787": "listen: 127.0.0.2:8080"},  # two loopback addresses
        {"listen: 127.0.0.1:8787": "listen: '[::1]:8080'"},  # IPv6 loopback beside IPv4 loopback
    ],
)
def test_listen_addresses_that_can_coexist_are_accepted(changes: dict[str, str]) -> None:
    """Sockets that can be bound together pass: another protocol, another specific address."""
    text = EXAMPLE
    for old, new in changes.items():
        text = text.replace(old, new, 1)
    parse_config(text, "f.yaml")


def test_address_collisions_are_reported_with_other_errors() -> None:
    """A shared port is reported beside an unknown key elsewhere, not instead of it."""
    text = EXAMPLE.replace("listen: 127.0.0.1:8787", "listen: 127.0.0.1:8080", 1).replace(
        "stop_grace_s", "stop_grace", 1
    )
    errors = config_errors(text)
    assert [error.split(": ")[1] for error in errors] == [
        "services[0].frontend",
        "services[0].platform.stop_grace",
    ]


def test_yaml_conveniences_still_work() -> None:
    """Anchors, aliases and merge keys are plain YAML and keep working (the first merged mapping wins, and
    a key of the mapping itself wins over merged ones); a key like `on` stays a name; a date-like version
    stays the text written."""
    rollout = (
        "    rollout:\n"
        "      <<: [{judge_interval_s: 2}, {judge_interval_s: 3, strategy: ab}]\n"
        "      strategy: canary\n"
        "      steps: [&first {weight: 10, min_requests: 50}, {<<: *first, weight: 20}]\n"
    )
    text = EXAMPLE[: EXAMPLE.index("    rollout:")] + rollout + EXAMPLE[EXAMPLE.index("    analysis:") :]
    service = parse_config(text.replace("stable: v1 ", "stable: 2026.01.02 ", 1), "f.yaml").services[0]
    assert service.stable == "2026.01.02"
    assert [(step.weight, step.min_requests) for step in service.rollout.steps] == [(10, 50), (20, 50)]
    assert (service.rollout.judge_interval_s, service.rollout.strategy) == (2, "canary")
    errors = config_errors(text.replace("stable: v1 ", "stable: 2026-01-02 ", 1))
    assert "services[0].stable: version '2026-01-02'" in errors[0], errors  # text, refused for its '-'
    errors = config_errors(EXAMPLE.replace("    rollout:\n", "    rollout:\n      on: 1\n", 1))
    assert ": services[0].rollout.on: unknown key" in errors[0], errors


def test_unsupported_yaml_tags_are_errors() -> None:
    """YAML types that a JSON document cannot hold (binary, sets, custom tags) are refused once, at their
    line, rather than converted into something unexpected."""
    text = EXAMPLE.replace("stable: v1 ", "stable: !!binary dGV4dA== ", 1).replace(
        "health_path: /healthz", "health_path: !!set {a}", 1
    )
    assert config_errors(text) == [
        f"f.yaml:{line_with(text, 'stable:')}: services[0].stable: "
        "the YAML tag tag:yaml.org,2002:binary is not supported here",
        f"f.yaml:{line_with(text, 'health_path')}: services[0].platform.health_path: "
        "the YAML tag tag:yaml.org,2002:set is not supported here",
    ]


def test_base_dir_cannot_be_set_in_the_file() -> None:
    """`base_dir` comes from the file's own location; written in the file, it is an unknown key."""
    errors = config_errors("base_dir: /etc\n" + EXAMPLE)
    assert errors[0].startswith("f.yaml:1: base_dir: unknown key"), errors

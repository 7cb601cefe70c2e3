"""Custom checks in the config (`rollout.checks`): good ones load, bad ones name the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.config import parse_config
from fridaymorning.errors import ConfigError

EXAMPLE = (Path(__file__).parents[2] / "src" / "fridaymorning" / "example.yaml").read_text()
ANCHOR = "      judge_interval_s: 1\n"

GOOD = """\
      checks:
        - name: latency_p95
          provider: prometheus://127.0.0.1:9090
          query: >-
            histogram_quantile(0.95, sum(rate(app_seconds_bucket{version="{{ version }}"}[{{ window }}]))
            by (le))
          fail_above: 0.5
        - name: errors
          provider: influxdb://127.0.0.1:8086/app
          query: >-
            SELECT mean("errors") FROM "app" WHERE "version" = '{{ version }}' AND time > now() - {{ window }}
          fail_above: 0.01
          interval_s: 30
          consecutive_error_limit: 2
        - {name: volume, provider: "logs://", query: "rps({{ service }}, {{ version }})", fail_below: 1}
"""


def with_checks(checks: str) -> str:
    assert ANCHOR in EXAMPLE
    return EXAMPLE.replace(ANCHOR, ANCHOR + checks, 1)


def test_custom_checks_load_with_their_defaults() -> None:
    """Each provider's check loads; unset settings take their defaults (Argo's error limit of 4)."""
    checks = parse_config(with_checks(GOOD), "f.yaml").services[0].rollout.checks
    assert [check.name for check in checks] == ["latency_p95", "errors", "volume"]
    first = checks[0]
    assert (first.fail_above, first.fail_below, first.interval_s) == (0.5, None, 10.0)
    assert (first.window_s, first.timeout_s, first.consecutive_error_limit) == (60, 5.0, 4)
    assert checks[1].consecutive_error_limit == 2 and checks[2].fail_below == 1


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        ("{name: c, provider: 'graphite://x:1', query: q, fail_above: 1}", "provider", "valid schemes"),
        ("{name: c, provider: 'prometheus://', query: q, fail_above: 1}", "provider", "needs a host"),
        ("{name: c, provider: 'logs://', query: 'p99({{ svc }}, v2)', fail_above: 1}", "query", "{{ svc }}"),
        ("{name: c, provider: 'logs://', query: q}", "checks[0]", "give 'fail_above', 'fail_below' or both"),
        ("{name: p99_slo, provider: 'logs://', query: q, fail_above: 1}", "name", "built-in check"),
        ("{name: c, provider: 'logs://', query: q, fail_above: '1'}", "fail_above", "write a number"),
        ("{name: c, provider: 'logs://', query: q, fail_above: 1, consecutive_error_limit: 0}", "limit", ""),
        ("{name: c, provider: 'logs://', query: q, fail_abov: 1}", "fail_abov", "did you mean 'fail_above'"),
    ],
)
def test_bad_checks_name_the_line_and_the_field(check: str, field: str, message: str) -> None:
    """A bad custom check is reported at its line, with its field and the reason."""
    text = with_checks(f"      checks: [{check}]\n")
    line = next(n for n, content in enumerate(text.splitlines(), 1) if "checks: [" in content)
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "f.yaml")
    error = str(raised.value)
    assert error.startswith(f"f.yaml:{line}: services[0].rollout.checks[0]"), error
    assert field in error.splitlines()[0] and message in error


def test_check_names_are_unique() -> None:
    """Two checks of one service may not share a name: the explanation names each."""
    check = "{name: c, provider: 'logs://', query: 'rps(web, v2)', fail_below: 1}"
    with pytest.raises(ConfigError, match="check names must be unique"):
        parse_config(with_checks(f"      checks: [{check}, {check}]\n"), "f.yaml")


def test_the_readmes_example_is_valid() -> None:
    """The README's custom checks example loads as the rollout section of a service."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Custom metric checks") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start : section.index("```\n", start)]
    rollout = "".join(f"    {line}\n" for line in example.splitlines())
    text = EXAMPLE[: EXAMPLE.index("    rollout:")] + rollout + EXAMPLE[EXAMPLE.index("    analysis:") :]
    checks = parse_config(text, "f.yaml").services[0].rollout.checks
    assert {check.provider.split(":")[0] for check in checks} == {"prometheus", "influxdb", "logs"}

"""Custom checks' query templates: `{{ name }}` placeholders, rendered with plain tokens only."""

from __future__ import annotations

import pytest

from fridaymorning.query_template import check_template, placeholders_of, render

VALUES = {"service": "web", "version": "v2", "baseline": "v1", "window": "60s"}


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        (
            'sum(rate(http_errors_total{service="{{ service }}",version="{{version}}"}[{{ window }}]))',
            'sum(rate(http_errors_total{service="web",version="v2"}[60s]))',
        ),
        (
            "SELECT mean(ms) FROM req WHERE \"version\" = '{{ version }}' AND time > now() - {{window}}",
            "SELECT mean(ms) FROM req WHERE \"version\" = 'v2' AND time > now() - 60s",
        ),
        ("p99({{ service }}, {{ baseline }})", "p99(web, v1)"),
        ('x{job="a"}', 'x{job="a"}'),  # PromQL's own braces stay as they are
    ],
)
def test_render(template: str, rendered: str) -> None:
    """Each placeholder becomes its value; everything else is left alone."""
    assert render(template, VALUES) == rendered


def test_unknown_placeholder_is_refused_with_the_valid_ones() -> None:
    """A typo in a placeholder is a config error listing the valid names."""
    with pytest.raises(ValueError, match=r"unknown placeholder \{\{ versoin \}\}.*\{\{ version \}\}"):
        check_template("x{v='{{ versoin }}'}")
    assert check_template("{{ service }}{{window}}") == "{{ service }}{{window}}"
    assert placeholders_of("{{ a }} {{b}}") == ["a", "b"]


@pytest.mark.parametrize("value", ['v2"} or vector(1) #', "v2' OR 1=1", "", "a b", "v2;DROP"])
def test_values_that_are_not_plain_tokens_are_refused(value: str) -> None:
    """A value that could close a quote or add a clause is never put into a query."""
    with pytest.raises(ValueError, match="not a plain token"):
        render('x{version="{{ version }}"}', {**VALUES, "version": value})


def test_placeholder_without_a_value_is_refused() -> None:
    """Rendering never leaves a placeholder in the query."""
    with pytest.raises(ValueError, match="no value"):
        render("{{ service }}", {})

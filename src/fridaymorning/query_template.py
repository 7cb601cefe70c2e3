"""Queries of custom checks, templated with the rollout they judge.

A placeholder is a name in double braces, with optional spaces: `{{ service }}`, `{{ version }}`,
`{{ baseline }}`, `{{ window }}`. Double braces never occur in PromQL or InfluxQL, whose own single
braces (`rate(x{job="web"}[1m])`) are left alone. Rendering substitutes text, never runs it: each value
must be a plain token (letters, digits, '.', '_'), so nothing can close a quoted label or add a clause.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS: dict[str, str] = {
    "service": "the service's name (its HAProxy backend)",
    "version": "the canary's version",
    "baseline": "the version the canary is compared with",
    "window": "the check's window as a duration, e.g. 60s",
}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._]+$")


def placeholders_of(template: str) -> list[str]:
    """The placeholder names used in `template`, in order of appearance."""
    return _PLACEHOLDER.findall(template)


def check_template(template: str) -> str:
    """`template` when every placeholder is known; else a ValueError naming the valid ones."""
    unknown = sorted(set(placeholders_of(template)) - set(PLACEHOLDERS))
    if unknown:
        valid = ", ".join(f"{{{{ {name} }}}}" for name in PLACEHOLDERS)
        named = ", ".join(f"{{{{ {name} }}}}" for name in unknown)
        raise ValueError(f"unknown placeholder {named} in the query; valid: {valid}")
    return template


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each placeholder replaced by its value; a value that is not a plain token, or a
    placeholder without a value, is a ValueError."""
    for name, value in values.items():
        if not _SAFE_VALUE.match(value):
            raise ValueError(f"{name} {value!r} is not a plain token; refusing to put it in a query")

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"no value for the placeholder {{{{ {name} }}}}")
        return values[name]

    return _PLACEHOLDER.sub(substitute, template)

"""The import graph of src/fridaymorning follows the layering written in the README, one way.

The README's architecture section lists, for each package, what it may import. These tests read that
list and every import statement of the source (with `ast`, nothing is imported), and name each import
that breaks it: file, line and the rule.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "fridaymorning"
README = ROOT / "README.md"
PACKAGE = "fridaymorning"
ROOT_UNIT = "__init__"  # the top package's own module: only the version
ANYTHING = None

# What analysis may use besides fridaymorning and the standard library: numeric libraries, and pydantic
# for the policy model. Standard modules that reach files, sockets, processes or threads are refused too.
ANALYSIS_LIBRARIES = frozenset({"numpy", "scipy", "ddsketch", "pydantic"})
IO_MODULES = frozenset(
    {
        "asyncio",
        "concurrent",
        "glob",
        "io",
        "multiprocessing",
        "os",
        "pathlib",
        "shutil",
        "signal",
        "socket",
        "sqlite3",
        "subprocess",
        "tempfile",
        "threading",
        "urllib",
    }
)

Rules = dict[str, frozenset[str] | None]  # package → what it may import (None: anything)

_RULE_LINE = re.compile(r"^- ((?:`[\w.]+`(?:, )?)+): (.+)$")


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, resolved to an absolute module name."""

    path: Path
    line: int
    source: str  # the importing module
    target: str  # the imported module (for `from m import name`, m itself)


def parse_rules(readme: str) -> tuple[Rules, list[str]]:
    """The README's layering list: the rules, and the packages in the order written (top first)."""
    start, end = readme.index("<!-- layering: begin -->"), readme.index("<!-- layering: end -->")
    rules: Rules = {}
    order: list[str] = []
    for line in readme[start:end].splitlines():
        match = _RULE_LINE.match(line)
        if match is None:
            continue
        packages = re.findall(r"`([\w.]+)`", match.group(1))
        allowed_text = match.group(2).split(" — ")[0].strip()
        allowed: frozenset[str] | None
        if allowed_text == "anything":
            allowed = ANYTHING
        elif allowed_text == "nothing":
            allowed = frozenset()
        else:
            allowed = frozenset(name.strip().strip("`") for name in allowed_text.split(","))
        for package in packages:
            rules[package] = allowed
            order.append(package)
    return rules, order


def module_of(path: Path, source_root: Path) -> str:
    """`src/fridaymorning/router/base.py` → `fridaymorning.router.base`."""
    parts = list(path.relative_to(source_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(path: Path, source_root: Path) -> list[Import]:
    """Every import of a fridaymorning module in one file, including those inside functions."""
    module = module_of(path, source_root)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [_absolute(node, module, is_package)]
        else:
            continue
        found.extend(Import(path, node.lineno, module, target) for target in targets)
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def unit_of(module: str) -> str | None:
    """The layering's unit of a module: its package under fridaymorning (or top-level module)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def broken_rule(source: str, target: str, rules: Rules) -> str | None:
    """Why `source` may not import `target` (both modules), or None when the layering allows it."""
    source_unit, target_unit = unit_of(source), unit_of(target)
    if source_unit is None or target_unit is None or source_unit == target_unit:
        return None
    if source_unit not in rules:
        return f"`{source_unit}` has no line in the README's layering"
    allowed = rules[source_unit]
    if allowed is ANYTHING or target_unit in allowed:
        return None
    listed = ", ".join(sorted(allowed)) or "nothing"
    return f"`{source_unit}` may import only {listed}; not `{target_unit}`"


def impure_library(target: str) -> str | None:
    """Why analysis may not import `target`, or None when it is pure enough."""
    top = target.split(".")[0]
    if top == PACKAGE or top in ANALYSIS_LIBRARIES:
        return None
    if top in sys.stdlib_module_names and top not in IO_MODULES:
        return None
    libraries = ", ".join(sorted(ANALYSIS_LIBRARIES))
    return f"`analysis` is pure: not `{top}` (only the standard library without I/O, and {libraries})"


def violations(source_root: Path, rules: Rules) -> list[str]:
    """Every import under source_root that the rules refuse, as `file:line: import → rule`."""
    found: list[str] = []
    for path in sorted(source_root.rglob("*.py")):
        for statement in imports_in(path, source_root):
            reason = broken_rule(statement.source, statement.target, rules)
            if reason is None and unit_of(statement.source) == "analysis":
                reason = impure_library(statement.target)
            if reason is not None:
                where = path.relative_to(source_root.parent)
                found.append(f"{where}:{statement.line}: imports {statement.target}: {reason}")
    return found


def units_in(source_root: Path) -> set[str]:
    units = {path.stem for path in source_root.glob("*.py")} | {
        path.parent.name for path in source_root.glob("*/__init__.py")
    }
    return units


def test_every_import_follows_the_written_layering() -> None:
    """No module of src/fridaymorning imports a package that its README line does not allow."""
    rules, _ = parse_rules(README.read_text(encoding="utf-8"))
    assert violations(SOURCE, rules) == []


def test_every_package_has_a_rule() -> None:
    """Each package and top-level module has exactly one line in the README, and no line names a ghost."""
    rules, order = parse_rules(README.read_text(encoding="utf-8"))
    assert sorted(units_in(SOURCE) - set(rules)) == []
    assert sorted(set(rules) - units_in(SOURCE)) == []
    assert len(order) == len(set(order)), "a package is listed twice"


def test_the_written_layering_runs_one_way() -> None:
    """Each package may import only packages listed below it, so the rules admit no cycle."""
    rules, order = parse_rules(README.read_text(encoding="utf-8"))
    upward = [
        f"`{package}` may import `{target}`, listed above it"
        for position, package in enumerate(order)
        for target in sorted(rules[package] or ())
        if target not in order[position + 1 :]
    ]
    assert upward == []


def test_a_wrong_way_import_is_named_with_file_line_and_rule(tmp_path: Path) -> None:
    """A made-up analysis module importing config (inside a function, relatively) is reported."""
    source_root = tmp_path / PACKAGE
    (source_root / "analysis").mkdir(parents=True)
    (source_root / "analysis" / "__init__.py").write_text("")
    (source_root / "analysis" / "judge.py").write_text(
        "import math\n\nfrom fridaymorning.models import Window\n\n\n"
        "def f():\n    from ..config import Config\n"
    )
    rules: Rules = {"analysis": frozenset({"models"})}

    assert violations(source_root, rules) == [
        "fridaymorning/analysis/judge.py:7: imports fridaymorning.config: "
        "`analysis` may import only models; not `config`"
    ]


def test_analysis_may_not_reach_files_or_processes(tmp_path: Path) -> None:
    """analysis may use numpy, but not process pools or rich: those belong to simulation/ or cli."""
    source_root = tmp_path / PACKAGE
    (source_root / "analysis").mkdir(parents=True)
    (source_root / "analysis" / "simulate.py").write_text(
        "import numpy\nfrom concurrent.futures import ProcessPoolExecutor\nfrom rich.table import Table\n"
    )

    found = violations(source_root, {"analysis": frozenset({"models"})})

    assert [line.split(": imports ")[0] for line in found] == [
        "fridaymorning/analysis/simulate.py:2",
        "fridaymorning/analysis/simulate.py:3",
    ]


def test_rules_are_read_from_the_readme_list() -> None:
    """Only the marked list is read; `anything`, `nothing` and remarks after a dash are understood."""
    readme = (
        "prose\n<!-- layering: begin -->\n- `cli`, `testing`: anything — the top\n"
        "- `api`: controller, `__init__` — never the router\n- `controller`: nothing\n"
        "- `errors`, `__init__`: nothing\n<!-- layering: end -->\n- `router`: api\n"
    )

    rules, order = parse_rules(readme)

    assert order == ["cli", "testing", "api", "controller", "errors", "__init__"]
    assert rules["cli"] is ANYTHING
    assert rules["api"] == frozenset({"controller", "__init__"})
    assert rules["errors"] == frozenset()
    assert broken_rule("fridaymorning.api.app", "fridaymorning.router.haproxy", rules) == (
        "`api` may import only __init__, controller; not `router`"
    )
    assert broken_rule("fridaymorning.api.app", "fridaymorning", rules) is None
    assert broken_rule("fridaymorning.controller.loop", "fridaymorning.controller.state", rules) is None

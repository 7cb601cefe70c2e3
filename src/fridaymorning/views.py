"""What the CLI shows: rollouts, verdicts and status as rich renderables, built from the API's JSON.

Pure functions of their input, no I/O. They render whatever they are given: a statistic the judge
could not compute arrives as None (the API's JSON has no NaN) or as NaN (read from the state store),
a bound may be infinite, a verdict may have no checks. None of that may stop a view, since a crashed
live view leaves a rollout without its watcher. Text from the outside (reasons, details, names) is
shown as it is, never read as rich markup.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Shown for a number that is missing or not a number: a check that could not compute it yet.
MISSING = "-"
# Integers up to this many digits are shown whole; longer ones in scientific notation.
MAX_WHOLE_DIGITS = 15


def number(value: Any, spec: str = ".4g") -> str:
    """An optional number in `spec`: '-' when missing or NaN, '∞' when infinite, whatever its size."""
    if value is None:
        return MISSING
    if not is_number(value):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return format(value, spec)
    return format(Decimal(value), spec)  # an int of any size, where float() would overflow


def count(value: Any) -> str:
    """A count of requests: whole when it is a reasonable integer, else as `number` shows it."""
    if is_number(value) and isinstance(value, int) and abs(value) < 10**MAX_WHOLE_DIGITS:
        return str(value)
    return number(value)


def share(part: Any, whole: Any) -> str:
    """part / whole as a percentage; '-' when either is missing or the share is not a finite number."""
    if not (is_number(part) and is_number(whole)) or not whole:
        return MISSING
    try:
        percent = part / whole * 100
    except (OverflowError, ZeroDivisionError):
        return MISSING
    return f"{percent:.2f}%" if math.isfinite(percent) else MISSING


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def clock_time(seconds: Any) -> str:
    """A Unix time as local date and time; '-' when it is missing or out of range."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (TypeError, ValueError, OverflowError, OSError):
        return MISSING


def duration(start: Any, end: Any) -> str:
    """Seconds from start to end, one decimal; '-' when either is missing."""
    try:
        return number(float(end) - float(start), ".1f") if end is not None else MISSING
    except (TypeError, ValueError, OverflowError):
        return MISSING


def plain(value: Any) -> Text:
    """Text shown as it is: '[red]' in a reason stays '[red]'."""
    return Text("" if value is None else str(value))


def checks_table(verdict: dict[str, Any]) -> Table:
    """One verdict's checks: statistic, bound, threshold, and the canary count n each check rests on."""
    window = verdict.get("window")
    title = f"verdict {verdict.get('phase', MISSING)}"
    if isinstance(window, dict):
        title += f", seconds [{count(window.get('start'))}, {count(window.get('end'))})"
    table = Table(title=escape(title), title_justify="left")
    for column in ("check", "phase", "statistic", "bound", "threshold", "canary n", "detail"):
        table.add_column(column)
    for check in verdict.get("checks") or []:
        table.add_row(
            plain(check.get("name")),
            plain(check.get("phase")),
            number(check.get("statistic")),
            number(check.get("bound")),
            number(check.get("threshold")),
            count(check.get("n")),
            plain(check.get("detail")),
        )
    return table


def version_stats_table(stats: list[dict[str, Any]], rollout: dict[str, Any]) -> Table:
    """Requests, failures and latency per version since the rollout began, each row naming its role."""
    roles = {rollout.get("version"): "canary", rollout.get("baseline"): "baseline"}
    table = Table(title="since the rollout began", title_justify="left")
    for column in ("version", "requests", "failed", "error rate", "p50 ms", "p99 ms"):
        table.add_column(column)
    for entry in stats:
        latency = entry.get("latency_ms") or {}
        version = entry.get("version")
        role = roles.get(version)
        table.add_row(
            plain(f"{version} ({role})" if role else version),
            count(entry.get("requests")),
            count(entry.get("failed")),
            share(entry.get("failed"), entry.get("requests")),
            number(latency.get("p50"), ".1f"),
            number(latency.get("p99"), ".1f"),
        )
    return table


def rollout_view(rollout: dict[str, Any], stats: list[dict[str, Any]]) -> Group:
    """The live view of `fm deploy --wait` and `fm watch`: phase, weight, per-version counts, the verdict."""
    title = (
        f"rollout {rollout.get('id')}: {rollout.get('service')} "
        f"{rollout.get('baseline')} → {rollout.get('version')}"
    )
    table = Table(title=escape(title), title_justify="left")
    for column in ("phase", "step", "canary weight", "reason"):
        table.add_column(column)
    table.add_row(
        plain(rollout.get("phase")),
        plain(rollout.get("step")),
        f"{count(rollout.get('canary_weight'))}%",
        plain(rollout.get("reason")),
    )
    parts: list[Any] = [table, version_stats_table(stats, rollout)]
    verdicts = [event["verdict"] for event in rollout.get("events") or [] if event.get("verdict")]
    if verdicts:
        parts.append(checks_table(verdicts[-1]))
    return Group(*parts)


def stable_note(service: dict[str, Any]) -> str:
    """When a promotion made another version stable than the config's `stable:`, say which one is used."""
    configured = service.get("config_stable")
    stable = service.get("stable")
    if configured is None or configured == stable:
        return ""
    return f"{stable} (promoted; the config says {configured}, the state store wins)"


def status_view(snapshot: dict[str, Any]) -> Group:
    """`fm status`: each service's stable version and rollout, then the running rollout's verdicts."""
    table = Table(title="fridaymorning")
    for column in ("service", "stable", "rollout", "phase", "canary weight", "reason"):
        table.add_column(column)
    verdicts: list[Any] = []
    for service in snapshot.get("services") or []:
        stable = stable_note(service) or service.get("stable")
        rollout = service.get("rollout")
        if rollout:
            table.add_row(
                plain(service.get("service")),
                plain(stable),
                plain(f"{rollout.get('id')}: {rollout.get('version')}"),
                plain(rollout.get("phase")),
                f"{count(rollout.get('canary_weight'))}%",
                plain(rollout.get("reason")),
            )
        else:
            table.add_row(plain(service.get("service")), plain(stable), MISSING, "idle", "0%", "")
        verdict = service.get("verdict")
        if rollout and verdict:
            verdicts.append(Text(f"{service.get('service')}, rollout {rollout.get('id')}:"))
            verdicts.append(checks_table(verdict))
        elif rollout:
            verdicts.append(Text(f"{service.get('service')}, rollout {rollout.get('id')}: no verdict yet"))
    return Group(table, *verdicts)


def fleet_lines(instances: list[Any]) -> list[str]:
    """`fm status` with `haproxy.instances`: one line per HAProxy, in sync or lagging and why."""
    found = []
    for instance in instances:
        name, admin = instance.get("name"), instance.get("admin")
        kind = "managed" if instance.get("managed") else "brought"
        if instance.get("state") == "in_sync":
            found.append(f"haproxy {name} ({kind}, {admin}): in sync")
        else:
            since = instance.get("lagging_since")
            age = f" for {time.time() - since:.0f} s" if is_number(since) else ""
            found.append(f"haproxy {name} ({kind}, {admin}): LAGGING{age}: {instance.get('reason')}")
    return found


def history_table(rollouts: list[Any]) -> Table:
    """`fm history`: one row per rollout (RolloutState records), newest first."""
    table = Table(title="rollouts")
    for column in ("id", "service", "baseline → version", "phase", "started", "seconds", "reason"):
        table.add_column(column)
    for rollout in rollouts:
        table.add_row(
            plain(rollout.id),
            plain(rollout.service),
            plain(f"{rollout.baseline} → {rollout.version}"),
            plain(rollout.phase),
            clock_time(rollout.started_at),
            duration(rollout.started_at, rollout.finished_at),
            plain(rollout.reason),
        )
    return table


def explain_view(rollout: Any, events: list[dict[str, Any]]) -> Group:
    """`fm explain`: every event of a rollout with its offset, weight and reason, and its verdict."""
    heading = f"{rollout.service} {rollout.baseline} → {rollout.version}, {rollout.phase}"
    parts: list[Any] = [Text.assemble((f"rollout {rollout.id}", "bold"), f": {heading}")]
    for event in events:
        head, tail = event_parts(rollout.started_at, event)
        parts.append(Text.assemble((head, "bold"), tail))
        if event.get("verdict"):
            parts.append(checks_table(event["verdict"]))
    return Group(*parts)


def event_parts(started_at: Any, event: dict[str, Any]) -> tuple[str, str]:
    """An event as `fm explain` heads it: ('+  12.3 s  step', ' at 20%: <reason>')."""
    offset = duration(started_at, event.get("at"))
    weight = count(event.get("canary_weight"))
    return f"+{offset:>6} s  {event.get('kind')}", f" at {weight}%: {event.get('reason')}"


# The rollout fields `explain_view` reads, as the API's JSON names them.
EXPLAINED_FIELDS = ("id", "service", "baseline", "version", "phase", "started_at")


def explain_api_view(rollout: dict[str, Any]) -> Group:
    """`explain_view` of a rollout as the API returns it (a dict with its events)."""
    fields = SimpleNamespace(**{name: rollout.get(name) for name in EXPLAINED_FIELDS})
    return explain_view(fields, list(rollout.get("events") or []))


def follow_event_line(rollout: dict[str, Any], event: dict[str, Any]) -> str:
    """One line per event while following a rollout without a terminal (a CI job's log)."""
    head, tail = event_parts(rollout.get("started_at"), event)
    return head + tail


def follow_progress_line(
    rollout: dict[str, Any], stats: list[dict[str, Any]], now: float, verdict: dict[str, Any] | None = None
) -> str:
    """Where a rollout stands, in one line for a log: '  12.0 s: progressing, step 1 at 20%; requests
    v1 1603 (0 failed), v2 398 (12 failed); judge: hold: 54 of 100 canary requests'. The judge's part is
    `verdict`, else the rollout's last recorded one."""
    where = f"{rollout.get('phase')}, step {rollout.get('step')} at {count(rollout.get('canary_weight'))}%"
    served = [
        f"{entry.get('version')} {count(entry.get('requests'))} ({count(entry.get('failed'))} failed)"
        for entry in stats
    ]
    elapsed = duration(rollout.get("started_at"), rollout.get("finished_at") or now)
    line = f"{elapsed:>7} s: {where}; requests {', '.join(served) or '-'}"
    verdicts = [event["verdict"] for event in rollout.get("events") or [] if event.get("verdict")]
    latest = verdict or (verdicts[-1] if verdicts else None)
    if latest:
        line += f"; judge: {verdict_summary(latest)}"
    return line


def verdict_summary(verdict: dict[str, Any]) -> str:
    """'pass', 'hold: 54 of 100 canary requests' while evidence gathers, or the phase and its checks."""
    phase = verdict.get("phase")
    if phase == "pass":
        return "pass"
    deciding = [check for check in verdict.get("checks") or [] if check.get("phase") == phase]
    evidence = [check for check in deciding if check.get("name") == "evidence"]
    if phase == "hold" and evidence:
        return f"hold: {evidence[0].get('detail')}"
    names = ", ".join(str(check.get("name")) for check in deciding)
    return f"{phase} on {names}" if names else str(phase)

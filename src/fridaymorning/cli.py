"""The `fm` command line.

Exit codes: 0 success or promoted, 1 runtime error (e.g. `fm up` not reachable), 2 usage or config
error, 3 rolled back, 4 aborted, 130 interrupted (Ctrl-C while following a rollout, which goes on).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from fridaymorning.config import DEFAULT_CONFIG_NAME, Config, load_config
from fridaymorning.controller.loop import rollout_dict
from fridaymorning.errors import ConfigError, FridayMorningError, MissingBinaryError, RolloutError
from fridaymorning.views import (
    explain_api_view,
    explain_view,
    fleet_lines,
    follow_event_line,
    follow_progress_line,
    history_table,
    rollout_view,
    status_view,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_ABORTED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class JudgeChoice(StrEnum):
    """The judges `fm simulate` can run: ours, and the reference implementations of Flagger and Kayenta."""

    FM = "fm"
    FLAGGER = "flagger"
    KAYENTA = "kayenta"


FINAL_EXIT_CODES = {"promoted": EXIT_OK, "rolled_back": EXIT_ROLLED_BACK, "aborted": EXIT_ABORTED}

app = typer.Typer(
    help="fridaymorning: canary releases for any web service behind HAProxy.", no_args_is_help=True
)
logs_app = typer.Typer(help="Read HAProxy logs offline.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")
console = Console()
errors = Console(stderr=True)

ConfigOption = typer.Option(
    Path(DEFAULT_CONFIG_NAME), "--config", "-c", envvar="FM_CONFIG", help="the fridaymorning.yaml to use"
)
ServiceOption = typer.Option(None, "--service", "-s", help="the service (needed when several are configured)")
JsonOption = typer.Option(False, "--json", help="print JSON instead of tables")
ExplainOption = typer.Option(
    False, "--explain", help="when the rollout ends, print every decision with its evidence, as `fm explain`"
)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print fm's one-line error (never wrapped, never read as markup) and exit with `code`."""
    errors.print("[bold red]error:[/] " + escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def config_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)


def client_of(config: Config) -> Any:
    from fridaymorning.client import ApiClient

    return ApiClient(config)


@app.command()
def init(
    path: Path = typer.Argument(Path(DEFAULT_CONFIG_NAME), help="where to write the example config"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented example fridaymorning.yaml."""
    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite it", EXIT_USAGE)
    example = Path(__file__).with_name("example.yaml").read_text(encoding="utf-8")
    path.write_text(example, encoding="utf-8")
    console.print(f"wrote {path}; check it with [bold]fm validate {path}[/]")


@app.command()
def validate(
    path: Path = typer.Argument(..., help="the config file to check"),
    as_json: bool = JsonOption,
    rps: float | None = typer.Option(
        None, "--rps", min=0.001, help="also plan each step's evidence at this many requests per second"
    ),
) -> None:
    """Check a config file; exit 2 with the file, line and field of the first error."""
    from fridaymorning.evidence_plan import validate_plans

    config = config_or_exit(path)
    recorded = recorded_stables_or_exit(config)
    services = [
        {
            "name": s.name,
            "stable": s.stable,
            "recorded_stable": recorded.get(s.name),
            "strategy": s.rollout.strategy,
            "steps": len(s.rollout.steps),
        }
        for s in config.services
    ]
    plan_lines, plans = validate_plans(config, rps) if rps is not None else ([], None)
    team_check = team_config_or_exit(config)
    if as_json:
        extra: dict[str, Any] = {} if plans is None else {"evidence_plans": plans}
        if team_check is not None:
            extra["team_config"] = team_check
        print_json({"path": str(path), "valid": True, "services": services, **extra})
        return
    names = ", ".join(f"{s['name']} ({s['stable']}, {s['strategy']}, {s['steps']} steps)" for s in services)
    console.print(f"{path}: valid; services: {names}", highlight=False, markup=False, soft_wrap=True)
    for service in services:
        if service["recorded_stable"] not in (None, service["stable"]):
            console.print(
                f"note: {service['name']}: {service['recorded_stable']} is stable since a promotion "
                f"(state store {config.state_path('state.db')}); it wins over `stable: {service['stable']}`",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    for line in plan_lines:
        console.print(line, markup=False, highlight=False)
    if team_check is not None:
        console.print(f"haproxy: {team_check}", markup=False, highlight=False, soft_wrap=True)


def team_config_or_exit(config: Config) -> str | None:
    """With `haproxy.team_config`: check that the team's HAProxy loads its file and ours; exit 2 if not."""
    from fridaymorning.router.brought import check_with_team_config, include_path

    theirs = config.team_config_path()
    if theirs is None:
        return None
    try:
        check_with_team_config(config)
    except (ConfigError, MissingBinaryError) as error:
        fail(str(error), EXIT_USAGE)
    if config.haproxy.owns == "servers":
        return f"`haproxy -c -f {theirs}` passes"
    return f"`haproxy -c -f {theirs} -f {include_path(config)}` passes"


@app.command()
def up(config_path: Path = ConfigOption) -> None:
    """Start HAProxy, the stable versions, the collector, the controllers and the API; Ctrl-C stops all."""
    from fridaymorning.runtime import run_until_signalled

    config = config_or_exit(config_path)
    try:
        asyncio.run(run_until_signalled(config, announce=console.print))
    except FridayMorningError as error:
        fail(str(error))


@app.command()
def deploy(
    version: str = typer.Argument(..., help="the version to roll out"),
    service: str | None = ServiceOption,
    wait: bool = typer.Option(
        False, "--wait", help="follow the rollout; exit 0 promoted, 3 rolled back, 4 aborted"
    ),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
    explain: bool = ExplainOption,
) -> None:
    """Start a canary rollout of VERSION."""
    config = config_or_exit(config_path)
    name = service_or_exit(config, service)
    client = client_of(config)
    rollout = call_or_exit(lambda: client.post(f"/services/{name}/deploy", {"version": version}))
    if not wait:
        print_json(rollout) if as_json else console.print(
            f"rollout {rollout['id']}: deploying {version} to {name}"
        )
    if not as_json:  # the evidence plan at the last minute's traffic, when the API has it
        from fridaymorning.evidence_plan import observed_plan_lines

        for line in observed_plan_lines(client, config, name):
            console.print(line, markup=False, highlight=False)
    if not wait:
        return
    final = follow(client, rollout["id"], as_json, explain)
    raise typer.Exit(FINAL_EXIT_CODES.get(str(final["phase"]), EXIT_ERROR))


@app.command()
def watch(
    rollout_id: int | None = typer.Argument(
        None, help="the rollout to follow (default: the service's running rollout)"
    ),
    service: str | None = ServiceOption,
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
    explain: bool = ExplainOption,
) -> None:
    """Follow a rollout with the live view of `deploy --wait`; exit 0 promoted, 3 rolled back, 4 aborted."""
    config = config_or_exit(config_path)
    client = client_of(config)
    if rollout_id is None:
        rollout_id = int(running_rollout_or_exit(client, service_or_exit(config, service))["id"])
    final = follow(client, rollout_id, as_json, explain)
    raise typer.Exit(FINAL_EXIT_CODES.get(str(final["phase"]), EXIT_ERROR))


@app.command()
def status(config_path: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """Show each service's stable version, its rollout and the collector's counters."""
    config = config_or_exit(config_path)
    snapshot = call_or_exit(lambda: client_of(config).get("/status"))
    if as_json:
        print_json(snapshot)
        return
    console.print(status_view(snapshot))
    for line in fleet_lines(snapshot.get("haproxy") or []):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(collector_line(snapshot.get("collector") or {}), highlight=False, markup=False)


@app.command()
def dashboard(
    viewer: bool = typer.Option(False, "--viewer", help="a read-only login (the viewer token's role)"),
    open_browser: bool = typer.Option(False, "--open", help="open the link in the default browser"),
    config_path: Path = ConfigOption,
) -> None:
    """Print a one-time link that logs a browser in to the live dashboard (usable once, for 5 minutes)."""
    config = config_or_exit(config_path)
    client = client_of(config)
    link = call_or_exit(lambda: client.login_link(viewer))
    print(link)
    if open_browser:
        import webbrowser

        webbrowser.open(link)


@app.command()
def abort(service: str | None = ServiceOption, config_path: Path = ConfigOption) -> None:
    """Abort the running rollout: the canary goes to weight 0 and is removed."""
    act_on_active_rollout("abort", service, config_path)


@app.command()
def promote(
    service: str | None = ServiceOption,
    full: bool = typer.Option(False, "--full", help="promote at once, skipping every remaining step"),
    config_path: Path = ConfigOption,
) -> None:
    """Move the running rollout on: to the next step now, or with --full straight to promotion."""
    act_on_active_rollout("promote?full=true" if full else "promote", service, config_path)


@app.command()
def approve(service: str | None = ServiceOption, config_path: Path = ConfigOption) -> None:
    """Approve the step a rollout waits on (steps with `approval: true`)."""
    act_on_active_rollout("approve", service, config_path)


@app.command()
def pause(service: str | None = ServiceOption, config_path: Path = ConfigOption) -> None:
    """Pause the running rollout: weights stay; a failing canary is still rolled back."""
    act_on_active_rollout("pause", service, config_path)


@app.command()
def resume(service: str | None = ServiceOption, config_path: Path = ConfigOption) -> None:
    """Resume a paused or held rollout; its current step starts over."""
    act_on_active_rollout("resume", service, config_path)


@app.command()
def retry(
    rollout_id: int | None = typer.Argument(
        None, help="the rollout to retry (default: the service's latest)"
    ),
    service: str | None = ServiceOption,
    wait: bool = typer.Option(False, "--wait", help="follow the new rollout, with deploy's exit codes"),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Deploy again the version of a rolled-back or aborted rollout."""
    config = config_or_exit(config_path)
    name = service_or_exit(config, service)
    client = client_of(config)
    if rollout_id is None:
        latest = call_or_exit(lambda: client.get("/rollouts", service=name, limit=1))
        if not latest:
            fail(f"refused: {name} has no rollout to retry")
        rollout_id = int(latest[0]["id"])
    rollout = call_or_exit(lambda: client.post(f"/rollouts/{rollout_id}/retry"))
    if wait:
        final = follow(client, rollout["id"], as_json)
        raise typer.Exit(FINAL_EXIT_CODES.get(str(final["phase"]), EXIT_ERROR))
    print_json(rollout) if as_json else console.print(
        f"rollout {rollout['id']}: retrying {rollout['version']}"
    )


@app.command()
def reload(config_path: Path = ConfigOption) -> None:
    """Reload HAProxy seamlessly: haproxy.cfg is re-rendered with the live servers, weights are kept."""
    config = config_or_exit(config_path)
    client = client_of(config)
    answer = call_or_exit(lambda: client.post("/haproxy/reload"))
    console.print(answer["detail"])


@app.command()
def history(
    service: str | None = ServiceOption,
    limit: int = typer.Option(20, help="how many rollouts to list"),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """List rollouts, newest first (reads the state store; `fm up` need not run)."""
    config = config_or_exit(config_path)
    states = state_store_or_exit(config)
    rollouts = states.rollouts(service, limit)
    if as_json:
        print_json([rollout_dict(rollout) for rollout in rollouts])
        return
    console.print(history_table(rollouts))


@app.command()
def explain(
    rollout_id: int = typer.Argument(..., help="the rollout, as `fm history` lists it"),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Every step, hold, promotion and rollback of a rollout, with its data window and checks."""
    config = config_or_exit(config_path)
    states, rollout = stored_rollout_or_exit(config, rollout_id)
    events = states.events(rollout_id)
    if as_json:
        print_json({**rollout_dict(rollout), "events": events})
        return
    console.print(explain_view(rollout, events))


@app.command()
def replay(
    rollout_id: int = typer.Argument(..., help="the rollout, as `fm history` lists it"),
    config_path: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Re-run the judge over a rollout's stored windows; exit 1 if any decision comes out differently."""
    from fridaymorning.controller.replay import replay as replay_rollout
    from fridaymorning.registry import resolve

    config = config_or_exit(config_path)
    states, rollout = stored_rollout_or_exit(config, rollout_id)
    metrics = resolve("store", config.store_url())(config.store_url())
    service = config.service(rollout.service)
    decisions = replay_rollout(rollout, states.events(rollout_id), metrics.query, service)
    differing = [decision for decision in decisions if not decision.same]
    if as_json:
        print_json(
            {"rollout": rollout_id, "decisions": len(decisions), "differing": [vars_of(d) for d in differing]}
        )
    else:
        table = Table(title=f"replay of rollout {rollout_id}")
        for column in ("t (s)", "event", "seconds judged", "recorded", "replayed"):
            table.add_column(column)
        for decision in decisions:
            mark = "" if decision.same else " [red](differs)[/]"
            if decision.incremental != decision.replayed:
                mark += f" [red](folded tick by tick: {decision.incremental})[/]"
            table.add_row(
                f"{decision.at - rollout.started_at:.1f}",
                decision.kind,
                f"[{decision.start}, {decision.end})",
                decision.recorded,
                decision.replayed + mark,
            )
        console.print(table)
        console.print(f"{len(decisions) - len(differing)} of {len(decisions)} decisions reproduced")
    if differing:
        raise typer.Exit(EXIT_ERROR)


@logs_app.command("summarize")
def logs_summarize(
    source: str = typer.Argument(..., help="a log file, or - for standard input"),
    as_json: bool = JsonOption,
) -> None:
    """Summarize an HAProxy log per server, like halog: requests, statuses, failures, Tr/Ta quantiles."""
    from fridaymorning.ingest.summarize import format_summary_table, summarize

    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as error:
        fail(f"cannot read {source}: {error.strerror}", EXIT_USAGE)
    with stream:
        summary = summarize(stream)
    if as_json:
        print_json(summary)
    else:
        console.print(format_summary_table(summary))


@app.command()
def simulate(
    scenario_path: Path = typer.Argument(..., help="a scenario YAML (see bench/scenarios/)"),
    config_path: Path | None = typer.Option(
        None, "--config", "-c", help="take the rollout steps and policy from this config (default: built-in)"
    ),
    service: str | None = ServiceOption,
    runs: int = typer.Option(1000, min=1, max=100_000, help="simulated rollouts"),
    judge: JudgeChoice = typer.Option(JudgeChoice.FM, help="the judge to simulate"),
    as_json: bool = JsonOption,
) -> None:
    """Simulate whole rollouts in virtual time through the production judge and decision function."""
    from fridaymorning.simulation.scenario import load_scenario
    from fridaymorning.simulation.simulate import plan_and_policy, summary_table
    from fridaymorning.simulation.simulate import simulate as run_simulation

    try:
        scenario = load_scenario(scenario_path)
        plan, policy, interval = plan_and_policy(config_path, service)
        summary = run_simulation(
            scenario, plan, policy, runs=runs, judge=judge.value, judge_interval_s=interval
        )
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    if as_json:
        print_json(summary)
    else:
        console.print(summary_table([summary]))


@app.command()
def demo(
    as_json: bool = JsonOption,
    rate: float = typer.Option(200.0, help="requests per second of generated traffic"),
    platform: str = typer.Option("local", help="local (processes) or swarm (Docker Swarm services)"),
    docker_host: str = typer.Option("", help="swarm: the manager's Docker host (default: DOCKER_HOST)"),
    image_node: list[str] = typer.Option([], help="swarm: another node's Docker host, given the images"),
) -> None:
    """Run a live canary demo: v1 stable, v2 (good) promoted, v3 (bad) rolled back."""
    from fridaymorning.demo.run import SwarmDemo, run_demo

    if platform not in ("local", "swarm"):
        fail(f"--platform: unknown platform {platform!r}; valid: local, swarm", EXIT_USAGE)
    swarm = None
    if platform == "swarm":
        swarm = SwarmDemo(f"swarm+{docker_host}" if docker_host else "swarm://", list(image_node))
    try:
        result = asyncio.run(run_demo(rate=rate, quiet=as_json, console=console, swarm=swarm))
    except FridayMorningError as error:
        fail(str(error))
    except asyncio.CancelledError:
        fail("interrupted; HAProxy and the instances were stopped", EXIT_ERROR)
    if as_json:
        print(json.dumps(result))
    if not result["ok"]:
        raise typer.Exit(EXIT_ERROR)


# --- helpers ---------------------------------------------------------------------------------------


def service_or_exit(config: Config, service: str | None) -> str:
    try:
        return config.service(service).name
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)


def call_or_exit(call: Any) -> Any:
    try:
        return call()
    except RolloutError as error:
        fail(f"refused: {error}")
    except FridayMorningError as error:
        fail(str(error))


def recorded_stables_or_exit(config: Config) -> dict[str, str]:
    """The stable versions a state store of this config records (promotions), if one exists."""
    from fridaymorning.controller.state import recorded_stable_versions

    try:
        return recorded_stable_versions(config.state_path("state.db"))
    except FridayMorningError as error:
        fail(str(error))


def state_store_or_exit(config: Config) -> Any:
    from fridaymorning.controller.state import StateStore

    path = config.state_path("state.db")
    if not path.exists():
        fail(f"no rollouts recorded yet: {path} does not exist (run `fm up` with this config first)")
    return StateStore(path)


def stored_rollout_or_exit(config: Config, rollout_id: int) -> tuple[Any, Any]:
    """The state store and one of its rollouts, or exit 2 naming the missing rollout."""
    states = state_store_or_exit(config)
    rollout = states.rollout(rollout_id)
    if rollout is None:
        fail(f"no rollout {rollout_id}", EXIT_USAGE)
    return states, rollout


def vars_of(decision: Any) -> dict[str, Any]:
    return {
        name: getattr(decision, name)
        for name in ("at", "kind", "start", "end", "recorded", "replayed", "incremental")
    }


# The collector counters `fm status` prints: every source of loss, and what was received.
COLLECTOR_KEYS = (
    "lines",
    "requests",
    "events",
    "rejected",
    "late_requests",
    "socket_drops",
    "udp_rcvbuf_errors",
    "haproxy_dropped_logs",
    "ring_dropped",
    "lost_across_restart",
    "sink_errors",
)


def collector_line(collector: dict[str, Any]) -> str:
    """One line of the collector's counters, with the reconciliation's findings."""
    parts = [f"{key} {collector[key]}" for key in COLLECTOR_KEYS if key in collector]
    reconciliation = collector.get("reconciliation") or {}
    if reconciliation:
        parts.append(
            f"reconciled {reconciliation.get('reconciliations', 0)} times, "
            f"{reconciliation.get('mismatched_intervals', 0)} mismatched, "
            f"{reconciliation.get('missing_lines', 0)} lines missing"
        )
    buffer = collector.get("store_buffer") or {}
    if buffer:
        parts.append(
            f"store buffer {buffer.get('pending', 0)} pending, {buffer.get('overflowed', 0)} overflowed, "
            f"{buffer.get('rejected', 0)} rejected, {buffer.get('retries', 0)} retries"
            + (f" (failing for {buffer['failing_for_s']} s)" if buffer.get("failing_for_s") else "")
        )
    rejected = collector.get("last_rejected") or []
    text = "collector: " + ", ".join(parts) + instance_lines(collector)
    if rejected:
        text += "\nlast rejected lines:\n  " + "\n  ".join(rejected)
    return text


def instance_lines(collector: dict[str, Any]) -> str:
    """The loss accounting of each instance of a fleet, a line each ('' for a single HAProxy)."""
    lines = []
    for name, instance in (collector.get("instances") or {}).items():
        reconciliation = instance.get("reconciliation") or {}
        lines.append(
            f"\n  {name}: requests {instance.get('requests', 0)}, "
            f"haproxy_dropped_logs {instance.get('haproxy_dropped_logs')}, "
            f"reconciled {reconciliation.get('reconciliations', 0)} times, "
            f"{reconciliation.get('mismatched_intervals', 0)} mismatched, "
            f"{reconciliation.get('missing_lines', 0)} lines missing, "
            f"{reconciliation.get('errors', 0)} errors"
        )
    if collector.get("unattributed_requests"):
        lines.append(f"\n  requests naming no instance: {collector['unattributed_requests']}")
    return "".join(lines)


def print_json(value: Any) -> None:
    """Standard JSON: a statistic the judge could not compute (NaN, infinite) is null, as in the API."""
    print(json.dumps(finite_or_null(value), default=str, allow_nan=False))


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def act_on_active_rollout(action: str, service: str | None, config_path: Path) -> None:
    config = config_or_exit(config_path)
    name = service_or_exit(config, service)
    client = client_of(config)
    rollout = running_rollout_or_exit(client, name)
    call_or_exit(lambda: client.post(f"/rollouts/{rollout['id']}/{action}"))
    verb = action.split("?")[0]
    console.print(f"{verb}: requested for rollout {rollout['id']} of {name} ({rollout['version']})")


def running_rollout_or_exit(client: Any, name: str) -> dict[str, Any]:
    """The service's running rollout, or exit 1 saying that none runs."""
    snapshot = call_or_exit(lambda: client.get("/status"))
    rollout = next((s["rollout"] for s in snapshot["services"] if s["service"] == name), None)
    if rollout is None:
        fail(f"refused: no rollout of {name} is running", EXIT_ERROR)
    return dict(rollout)


def follow(client: Any, rollout_id: int, as_json: bool, explain: bool = False) -> dict[str, Any]:
    """Follow a rollout until it ends, with a live view; its final state. With `explain`, then print
    every decision with its evidence.

    Ctrl-C stops following, not the rollout: exit 130, saying so.
    """
    errors.print(
        f"following rollout {rollout_id}; Ctrl-C stops following, not the rollout",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    try:
        rollout = poll_until_finished(client, rollout_id, as_json)
    except KeyboardInterrupt:
        errors.print("the rollout goes on; `fm abort` stops it", highlight=False, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        print_json({key: value for key, value in rollout.items() if key != "events"})
    elif explain:
        console.print(explain_api_view(rollout))
    return rollout


def poll_until_finished(client: Any, rollout_id: int, as_json: bool) -> dict[str, Any]:
    """Poll a rollout until it reaches a final phase, updating the live view each time."""
    if not as_json and not console.is_terminal:
        return poll_in_lines(client, rollout_id)
    terminal = set(FINAL_EXIT_CODES)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            rollout = call_or_exit(lambda: client.get(f"/rollouts/{rollout_id}"))
            if not as_json:
                live.update(rollout_view(rollout, version_stats(client, rollout)))
            if rollout["phase"] in terminal:
                return dict(rollout)
            time.sleep(0.5)


# Without a terminal (a CI job's log, a file) the live view becomes lines: each event as it is
# committed, and where the rollout stands this often; at the end, the live view's last state.
PROGRESS_LINE_INTERVAL_S = 10.0


def poll_in_lines(client: Any, rollout_id: int) -> dict[str, Any]:
    """Poll a rollout until it reaches a final phase, printing its events and its progress as lines."""
    shown_events, progress_at = 0, -math.inf
    while True:
        rollout = call_or_exit(lambda: client.get(f"/rollouts/{rollout_id}"))
        events = rollout.get("events") or []
        for event in events[shown_events:]:
            console.print(follow_event_line(rollout, event), markup=False, highlight=False, soft_wrap=True)
        shown_events = len(events)
        finished = rollout["phase"] in FINAL_EXIT_CODES
        if finished or time.monotonic() - progress_at >= PROGRESS_LINE_INTERVAL_S:
            progress_at = time.monotonic()
            stats = version_stats(client, rollout)
            line = follow_progress_line(rollout, stats, time.time(), latest_verdict(client, rollout))
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if finished:  # and the live view's last state, as a terminal keeps it
            console.print(rollout_view(rollout, stats))
            return dict(rollout)
        time.sleep(0.5)


def latest_verdict(client: Any, rollout: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout's verdict of its latest judgement (events record only changes of phase), while it runs."""
    try:
        snapshot = client.get("/status")
    except FridayMorningError:
        return None
    for service in snapshot.get("services") or []:
        verdict = service.get("verdict")
        if (service.get("rollout") or {}).get("id") == rollout["id"] and isinstance(verdict, dict):
            return verdict
    return None


def version_stats(client: Any, rollout: dict[str, Any]) -> list[dict[str, Any]]:
    """Requests, failures and latency of the canary and its baseline since the rollout began."""
    start = int(rollout["started_at"])
    end = int(rollout["finished_at"] or time.time()) + 1
    stats = []
    for version in (rollout["baseline"], rollout["version"]):
        try:
            stats.append(
                client.get(f"/services/{rollout['service']}/metrics", version=version, start=start, end=end)
            )
        except FridayMorningError:
            continue  # the live view shows what it can; the rollout goes on regardless
    return stats


def main() -> None:
    app()

"""The `fridaymorning.yaml` configuration, validated by pydantic.

Every error names the file, the line and the field, and every error in a file is reported at once.
A file is validated strictly: a quoted number is text and is refused where a number belongs. Relative
paths in the file are relative to the file's own directory, so a config works from wherever `fm` is
started.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from fridaymorning.analysis.policy import AnalysisConfig
from fridaymorning.config_addresses import Listener, collisions
from fridaymorning.config_source import (
    Location,
    Problem,
    decode,
    dotted,
    load_document,
    placeholder_hint,
    raise_problems,
)
from fridaymorning.errors import ConfigError
from fridaymorning.models import VERSION_PATTERN
from fridaymorning.query_template import check_template

DEFAULT_CONFIG_NAME = "fridaymorning.yaml"


class StrictModel(BaseModel):
    """A model that refuses unknown keys: a typo is an error, not a silently ignored setting."""

    model_config = ConfigDict(extra="forbid")


__all__ = [
    "AnalysisConfig",
    "Config",
    "MetricCheckConfig",
    "ServiceConfig",
    "dotted",
    "key_lines",
    "line_of",
    "load_config",
    "parse_config",
]


def parse_address(value: str) -> tuple[str, int]:
    """Split 'host:port' (or '[v6]:port') into its parts; raises ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host.strip("[]"), port


def _checked_address(value: str) -> str:
    """`value` unchanged when parse_address accepts it."""
    parse_address(value)
    return value


# A 'host:port' setting (a frontend, a listen address), checked as the config is read.
Address = Annotated[str, AfterValidator(_checked_address)]


# A brought HAProxy's admin socket: a Unix socket's absolute path, or a `stats socket ipv4@` address.
ADMIN_ADDRESS = re.compile(r"^(unix:///[^\s;]+|ipv4@[0-9]{1,3}(\.[0-9]{1,3}){3}:[0-9]{1,5})$")


class HAProxyInstanceConfig(StrictModel):
    """One HAProxy of a fleet. With `admin` it is *brought*: a HAProxy someone else runs, reached over
    its admin socket (`unix:///PATH` or `ipv4@A.B.C.D:PORT`). Without, it is *managed*: fridaymorning
    starts it and writes its whole haproxy.cfg, as when no instances are listed (at most one)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    admin: str | None = None

    @field_validator("admin")
    @classmethod
    def admin_address(cls, admin: str | None) -> str | None:
        if admin is None or ADMIN_ADDRESS.match(admin):
            return admin
        raise ValueError(f"expected unix:///ABSOLUTE/PATH or ipv4@A.B.C.D:PORT, got {admin!r}")


class HAProxyConfig(StrictModel):
    """Where HAProxy keeps its runtime files. Relative paths are under `state_dir`.

    `instances` lists a fleet (see HAProxyInstanceConfig); empty means one managed HAProxy. A brought
    HAProxy loads `include_file`, which fridaymorning writes, with a second `-f` (owns: backends), or
    has the service's backends itself and fridaymorning only adds their servers (owns: servers).
    `team_config` is the brought HAProxy's own file: `fm validate` checks that it loads with ours.
    """

    binary: str = "haproxy"
    admin_socket: str = "haproxy.sock"
    state_file: str = "haproxy.state"
    log_format: Literal["compact", "httplog"] = "compact"
    health_check_interval_ms: int = Field(default=1000, ge=100, le=60000)
    instances: list[HAProxyInstanceConfig] = Field(default_factory=list)
    owns: Literal["backends", "servers"] = "backends"
    include_file: str = "fridaymorning-haproxy.cfg"
    team_config: str | None = None

    @field_validator("instances")
    @classmethod
    def one_managed_instance(cls, instances: list[HAProxyInstanceConfig]) -> list[HAProxyInstanceConfig]:
        names = [instance.name for instance in instances]
        if len(set(names)) != len(names):
            raise ValueError(f"instance names must be unique, got {names}")
        managed = [instance.name for instance in instances if instance.admin is None]
        if len(managed) > 1:
            raise ValueError(
                f"at most one instance without 'admin' (managed by fridaymorning), got {managed}"
            )
        return instances


class PlatformConfig(StrictModel):
    """How instances of a version are started."""

    url: str = "local://"
    # local://: the argv of an instance, with '{port}'. swarm://: the image, with '{version}'.
    command: list[str] = Field(default_factory=list)
    image: str = ""
    container_port: int = Field(default=8080, gt=0, lt=65536)
    # swarm:// without a registry: Docker hosts of the other nodes, which get each image by save/load.
    image_nodes: list[str] = Field(default_factory=list)
    host: str = Field(
        default="127.0.0.1", description="the address instances listen on, and HAProxy reaches them at"
    )
    replicas: int = Field(default=1, ge=1, le=64)
    health_path: str = "/healthz"
    health_timeout_s: float = Field(default=20.0, gt=0)
    stop_grace_s: float = Field(default=5.0, ge=0)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def known_scheme(cls, value: str) -> str:
        from fridaymorning.registry import check_scheme

        return check_scheme("platform", value)

    @field_validator("command")
    @classmethod
    def command_uses_port(cls, command: list[str]) -> list[str]:
        if command and not any("{port}" in part for part in command):
            raise ValueError("the command must contain '{port}' so each instance gets its own port")
        for part in command:
            try:
                part.format(port=0, version="v", index=0, python="python")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"bad placeholder in {part!r}: only {{port}}, {{version}}, {{index}} and {{python}} exist"
                ) from error
        return command

    @field_validator("host")
    @classmethod
    def host_is_address(cls, host: str) -> str:
        ipaddress.ip_address(host)  # a ValueError names the problem
        return host

    @model_validator(mode="after")
    def what_to_run(self) -> PlatformConfig:
        swarm = self.url.startswith("swarm")
        if swarm and not self.image:
            raise ValueError("a swarm:// platform needs `image`, e.g. 'registry/app:{version}'")
        if not swarm and not self.command:
            raise ValueError("a local:// platform needs `command`, with '{port}' in it")
        return self

    @field_validator("health_path")
    @classmethod
    def path_is_absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("the health path must start with '/'")
        return path


class StepConfig(StrictModel):
    """One step of a canary rollout: the canary's share of traffic and how long to stay there."""

    weight: int = Field(ge=1, le=100, description="percent of the backend's traffic sent to the canary")
    min_duration_s: float = Field(default=30.0, ge=0)
    max_duration_s: float = Field(default=600.0, gt=0)
    min_requests: int = Field(default=100, ge=1)
    approval: bool = Field(default=False, description="after passing, wait for `fm approve`")

    @model_validator(mode="after")
    def durations_ordered(self) -> StepConfig:
        if self.max_duration_s < self.min_duration_s:
            raise ValueError("max_duration_s must not be less than min_duration_s")
        return self


# Header and cookie names go into haproxy.cfg: a strict token, never free text.
HTTP_TOKEN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class ABConfig(StrictModel):
    """A/B routing: requests whose header (or cookie) has `value` go to the canary, all others to stable."""

    header: str | None = Field(default=None, pattern=HTTP_TOKEN)
    cookie: str | None = Field(default=None, pattern=HTTP_TOKEN)
    value: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")

    @model_validator(mode="after")
    def one_matcher(self) -> ABConfig:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("set exactly one of 'header' or 'cookie'")
        return self


class AffinityConfig(StrictModel):
    """Session affinity: HAProxy inserts this cookie, so a user keeps seeing one version."""

    cookie: str = Field(default="FMSERVER", pattern=HTTP_TOKEN)


class BlueGreenConfig(StrictModel):
    """Blue/green: how long blue keeps running after the switch, ready for an instant rollback."""

    rollback_window_s: float = Field(default=300.0, ge=0)


# Names the judge gives its own checks; a custom check may not take one (replay tells them apart by name).
BUILTIN_CHECK_NAME = re.compile(
    r"^(evidence|metrics|canary_health|rollout_hook|error_rate_slo|p99_slo|error_rate_vs_baseline"
    r"|p[0-9]+_vs_baseline)$"
)


class MetricCheckConfig(StrictModel):
    """A custom check: a query to a metric provider, run every `interval_s`, failing past a threshold.

    `query` may use `{{ service }}`, `{{ version }}` (the canary), `{{ baseline }}` and `{{ window }}`
    (`window_s` as a duration, e.g. `60s`). A query that fails is an error measurement, never a pass;
    `consecutive_error_limit` errors in a row fail the check, and so does one value past the threshold.
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    provider: str = Field(
        description="logs://, prometheus://HOST:PORT, victoriametrics://HOST:PORT or influxdb://HOST:PORT/DB"
    )
    query: str = Field(min_length=1)
    fail_above: float | None = None
    fail_below: float | None = None
    interval_s: float = Field(default=10.0, gt=0, le=3600)
    window_s: int = Field(default=60, ge=1, le=86400)
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    consecutive_error_limit: int = Field(default=4, ge=1, le=1000)

    @field_validator("name")
    @classmethod
    def not_builtin(cls, name: str) -> str:
        if BUILTIN_CHECK_NAME.match(name):
            raise ValueError(f"{name!r} is the name of a built-in check; choose another")
        return name

    @field_validator("provider")
    @classmethod
    def known_provider(cls, value: str) -> str:
        from fridaymorning.registry import check_scheme, scheme_of

        check_scheme("provider", value)
        if scheme_of(value) != "logs" and not urlsplit(value).netloc:
            raise ValueError(f"provider {value!r} needs a host and a port, e.g. prometheus://127.0.0.1:9090")
        return value

    @field_validator("query")
    @classmethod
    def known_placeholders(cls, query: str) -> str:
        return check_template(query)

    @model_validator(mode="after")
    def has_threshold(self) -> MetricCheckConfig:
        if self.fail_above is None and self.fail_below is None:
            raise ValueError("give 'fail_above', 'fail_below' or both")
        return self


class RolloutConfig(StrictModel):
    """How a new version is rolled out, and what to do when evidence stays too thin.

    `canary` walks `steps` (or the steps generated from `step_weight`/`max_weight`); `blue_green`
    switches all traffic at once and keeps blue for `blue_green.rollback_window_s`; `ab` sends only the
    requests matched by `ab` to the canary. For `blue_green` and `ab`, the first step's durations and
    minimum requests bound the analysis; its weight is not used.
    """

    strategy: Literal["canary", "blue_green", "ab"] = "canary"
    steps: list[StepConfig] = Field(default_factory=list)
    step_weight: int | None = Field(default=None, ge=1, le=100)
    max_weight: int | None = Field(default=None, ge=1, le=100)
    step_min_duration_s: float = Field(default=30.0, ge=0, description="for generated steps")
    step_max_duration_s: float = Field(default=600.0, gt=0, description="for generated steps")
    step_min_requests: int = Field(default=100, ge=1, description="for generated steps")
    fresh_baseline: bool = Field(
        default=False, description="judge against new instances of stable at the canary's weight"
    )
    ab: ABConfig | None = None
    affinity: AffinityConfig | None = None
    blue_green: BlueGreenConfig = Field(default_factory=BlueGreenConfig)
    judge_interval_s: float = Field(default=1.0, gt=0, le=60)
    on_insufficient_evidence: Literal["hold", "rollback"] = "hold"
    checks: list[MetricCheckConfig] = Field(default_factory=list, description="custom metric checks")

    @field_validator("checks")
    @classmethod
    def unique_check_names(cls, checks: list[MetricCheckConfig]) -> list[MetricCheckConfig]:
        names = [check.name for check in checks]
        if len(set(names)) != len(names):
            raise ValueError(f"check names must be unique, got {names}")
        return checks

    @field_validator("steps")
    @classmethod
    def weights_increase(cls, steps: list[StepConfig]) -> list[StepConfig]:
        weights = [step.weight for step in steps]
        if weights != sorted(set(weights)):
            raise ValueError(f"step weights must strictly increase, got {weights}")
        return steps

    @model_validator(mode="after")
    def steps_defined(self) -> RolloutConfig:
        generated = self.step_weight is not None or self.max_weight is not None
        if generated and self.steps:
            raise ValueError("give either 'steps' or 'step_weight'/'max_weight', not both")
        if generated:
            self.steps = generate_steps(self)
        if not self.steps:
            raise ValueError("give 'steps', or 'step_weight' and 'max_weight'")
        weights = [step.weight for step in self.steps]
        if self.strategy == "ab" and self.ab is None:
            raise ValueError("strategy 'ab' needs an 'ab' section with a header or cookie to match")
        if self.fresh_baseline and (self.strategy != "canary" or weights[-1] > 50):
            raise ValueError("fresh_baseline needs strategy 'canary' and step weights of at most 50")
        return self


def generate_steps(rollout: RolloutConfig) -> list[StepConfig]:
    """Steps step_weight, 2 * step_weight, … up to max_weight (Flagger's stepWeight/maxWeight)."""
    if rollout.step_weight is None or rollout.max_weight is None:
        raise ValueError("'step_weight' and 'max_weight' go together")
    if rollout.max_weight < rollout.step_weight:
        raise ValueError("'max_weight' must be at least 'step_weight'")
    weights = list(range(rollout.step_weight, rollout.max_weight + 1, rollout.step_weight))
    if weights[-1] != rollout.max_weight:
        weights.append(rollout.max_weight)
    return [
        StepConfig(
            weight=weight,
            min_duration_s=rollout.step_min_duration_s,
            max_duration_s=max(rollout.step_max_duration_s, rollout.step_min_duration_s),
            min_requests=rollout.step_min_requests,
        )
        for weight in weights
    ]


HookKind = Literal["pre_rollout", "rollout", "confirm_promotion", "post_rollout", "rollback"]


class LoadTestConfig(StrictModel):
    """Generated traffic through the service's frontend while a rollout runs (loopback frontends only)."""

    rate_per_s: float = Field(default=50.0, gt=0, le=5000)
    path: str = Field(default="/", pattern=r"^/")
    concurrency: int = Field(default=8, ge=1, le=256)


class HookConfig(StrictModel):
    """A hook: an HTTP webhook (POST JSON), a command (argv, never a shell), or a load test.

    pre_rollout: a failure aborts before any traffic. rollout: runs at each step; a failure counts as a
    failed check. confirm_promotion: a gate before promotion (fails → hold). post_rollout: after
    promotion. rollback: after a rollback or abort. load_test is for kind `rollout` only.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    kind: HookKind
    url: str | None = Field(default=None, pattern=r"^https?://")
    command: list[str] | None = Field(default=None, min_length=1)
    load_test: LoadTestConfig | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=3600)
    retries: int = Field(default=2, ge=0, le=10)

    @model_validator(mode="after")
    def one_form(self) -> HookConfig:
        forms = [form for form in (self.url, self.command, self.load_test) if form is not None]
        if len(forms) != 1:
            raise ValueError("a hook has exactly one of 'url', 'command' or 'load_test'")
        if self.load_test is not None and self.kind != "rollout":
            raise ValueError("a load_test hook must be of kind 'rollout'")
        return self


NotificationEvent = Literal["started", "step", "held", "promoted", "rolled_back", "aborted"]


class NotificationConfig(StrictModel):
    """Where rollout events are posted: a generic JSON webhook or a Slack-compatible incoming webhook."""

    url: str = Field(pattern=r"^https?://")
    format: Literal["generic", "slack"] = "generic"
    events: list[NotificationEvent] = Field(default_factory=lambda: list(get_args(NotificationEvent)))
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class ServiceConfig(StrictModel):
    """One service: its HAProxy frontend and backend, how to run it, and how to roll it out."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,40}$")
    frontend: Address = Field(description="HOST:PORT where HAProxy accepts this service's clients")
    stable: str = Field(description="the version that serves traffic when no rollout runs")
    platform: PlatformConfig
    rollout: RolloutConfig
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    hooks: list[HookConfig] = Field(default_factory=list)
    notifications: list[NotificationConfig] = Field(default_factory=list)

    @field_validator("stable")
    @classmethod
    def version_is_token(cls, value: str) -> str:
        return check_version(value)


class CollectorConfig(StrictModel):
    """Where the collector receives HAProxy's request logs.

    `udp`: one datagram per request; HAProxy never blocks and drops when the socket is full (counted).
    `tcp`: HAProxy buffers lines in a `ring` and forwards them over TCP: lossless unless the ring
    itself overflows, which HAProxy reports and the collector counts.
    """

    protocol: Literal["udp", "tcp"] = "udp"
    listen: Address = "127.0.0.1:5140"
    lateness_s: float = Field(default=1.0, ge=0, le=30, description="how long a second stays open")
    reconcile_interval_s: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="how often logged requests are checked against HAProxy's counters",
    )


class StoreConfig(StrictModel):
    """Where per-second windows are kept."""

    url: str = "sqlite:///metrics.db"

    @field_validator("url")
    @classmethod
    def known_scheme(cls, value: str) -> str:
        from fridaymorning.registry import check_scheme

        parts = urlsplit(check_scheme("store", value))
        if parts.scheme != "sqlite" and (not parts.hostname or not parts.path.strip("/")):
            raise ValueError(
                f"a {parts.scheme} store needs a host and a database: {parts.scheme}://host:port/db"
            )
        return value


class ApiConfig(StrictModel):
    """The HTTP API. It binds to loopback unless told otherwise."""

    listen: Address = "127.0.0.1:8787"


class Config(StrictModel):
    """The whole `fridaymorning.yaml`."""

    state_dir: str = ".fm"
    haproxy: HAProxyConfig = Field(default_factory=HAProxyConfig)
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    services: list[ServiceConfig] = Field(min_length=1)

    # Set by load_config: the directory relative paths are resolved against.
    base_dir: str = Field(default=".", exclude=True)

    @field_validator("services")
    @classmethod
    def unique_services(cls, services: list[ServiceConfig]) -> list[ServiceConfig]:
        # Frontends that share a port are found with the other listen addresses, by address_problems.
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique, got {names}")
        return services

    def state_path(self, *parts: str) -> Path:
        """A path under the state directory, resolved against the config file's directory."""
        return Path(self.base_dir, self.state_dir, *parts).resolve()

    def runtime_path(self, value: str) -> Path:
        """Resolve a configured runtime path: absolute as given, relative under the state directory."""
        path = Path(value)
        return path if path.is_absolute() else self.state_path(value)

    def service(self, name: str | None) -> ServiceConfig:
        """The named service, or the only one when `name` is None."""
        if name is None:
            if len(self.services) == 1:
                return self.services[0]
            names = ", ".join(service.name for service in self.services)
            raise ConfigError(f"several services are configured ({names}): name one with --service")
        for service in self.services:
            if service.name == name:
                return service
        names = ", ".join(service.name for service in self.services)
        raise ConfigError(f"no service named {name!r}; configured services: {names}")

    def team_config_path(self) -> Path | None:
        """The brought HAProxy's own config file, relative to this file's directory; None if not given."""
        if self.haproxy.team_config is None:
            return None
        return Path(self.base_dir, self.haproxy.team_config).resolve()

    def store_url(self) -> str:
        """The store URL with a relative sqlite path resolved under the state directory."""
        prefix = "sqlite:///"
        if self.store.url.startswith(prefix):
            path = self.store.url[len(prefix) :]
            return prefix + str(self.runtime_path(path))  # absolute: four slashes
        return self.store.url


def check_version(value: str) -> str:
    """Return `value` if it is a valid version token, else raise ValueError with the rule."""
    if not VERSION_PATTERN.match(value):
        raise ValueError(
            f"version {value!r} must start with a letter or digit "
            "and contain only letters, digits, '.' and '_' ('__' is reserved), at most 51 characters"
        )
    return value


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError naming the file, line and field."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the config: {error.strerror}", path=str(file)) from error
    text = decode(raw, str(file))
    return parse_config(text, str(file), base_dir=str(file.resolve().parent))


def parse_config(text: str, filename: str, base_dir: str = ".") -> Config:
    """Validate config text strictly. Raises one ConfigError listing every problem, one per line, each
    with `filename`, its line and its field."""
    document = load_document(text, filename)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of settings", path=filename, line=1)
    problems = list(document.problems)
    if "base_dir" in data:  # set from the file's location, never from its content
        problems.append(Problem(document.lines[("base_dir",)], "base_dir", unknown_key("base_dir", ())))
    config: Config | None = None
    try:
        # Strict JSON mode: no conversion between text and numbers, while a YAML list still fills a tuple.
        config = Config.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as error:
        problems += [
            validation_problem(details, document.lines)
            for details in error.errors()
            if not document.explains(tuple(details["loc"]))
        ]
    problems += address_problems(data, document.lines)
    raise_problems(problems, filename)
    assert config is not None  # no problem means validation passed
    config.base_dir = base_dir
    return config


def validation_problem(details: ErrorDetails, lines: dict[Location, int]) -> Problem:
    """One pydantic error as a Problem: its line, its field and a message with a hint where one helps."""
    location = tuple(details["loc"])
    return Problem(line_of(location, lines), dotted(location), describe(details))


def describe(details: ErrorDetails) -> str:
    """The message for one pydantic error, in the words of the file rather than of Python."""
    kind, value = details["type"], details.get("input")
    if kind == "extra_forbidden":
        return unknown_key(str(details["loc"][-1]), tuple(details["loc"][:-1]))
    if kind == "missing":
        return "required, but missing"
    message = details["msg"].removeprefix("Value error, ")
    hint = placeholder_hint(value)
    if hint is not None:
        return f"{message}; {hint}"
    if isinstance(value, str) and kind in ("int_type", "float_type"):
        return f"{message}, got the text {value!r}; write a number without quotes"
    if isinstance(value, str) and kind == "bool_type":
        return f"{message}, got the text {value!r}; write true or false without quotes"
    if isinstance(value, bool | int | float) and kind == "string_type":
        read_as = "true or false" if isinstance(value, bool) else "a number"
        return f"{message}; YAML reads this as {read_as}; put text in quotes"
    return message


def unknown_key(key: str, location: tuple[Any, ...]) -> str:
    """'unknown key' with the nearest valid spelling, or the valid keys when none is near."""
    model = model_at(location)
    if model is None:
        return "unknown key"
    valid = sorted(name for name, field in model.model_fields.items() if not field.exclude)
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if near:
        return f"unknown key; did you mean '{near[0]}'?"
    return f"unknown key; valid keys here: {', '.join(valid)}"


def model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields are valid at `location` of the file (e.g. ('services', 0) → ServiceConfig)."""
    annotation: Any = Config
    for part in location:
        annotation = without_none(annotation)
        if isinstance(part, int):
            items = get_args(annotation)
            annotation = items[0] if items else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field is not None else None
        else:
            return None
    annotation = without_none(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def without_none(annotation: Any) -> Any:
    """`X | None` → X; anything else as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def address_problems(data: dict[str, Any], lines: dict[Location, int]) -> list[Problem]:
    """Listen addresses of the file (or their defaults) that would take the same socket.

    Works on the raw data, so it is reported together with every other problem; a value that is not a
    valid address is left to the field's own validation.
    """
    locations = configured_listeners(data)

    def line(listener: Listener) -> int | None:
        return lines.get(locations[listener])

    problems = []
    for pair in collisions(list(locations)):
        # Reported at the later of the two in the file; a default, written nowhere, counts as first.
        first, second = sorted(pair, key=lambda listener: line(listener) or 0)
        where = f"line {line(first)}" if line(first) is not None else "its default"
        message = f"{second.address()} takes the same socket as {first.describe()} ({where})"
        problems.append(Problem(line(second) or 1, second.field, message + "; give each its own port"))
    return problems


def configured_listeners(data: dict[str, Any]) -> dict[Listener, Location]:
    """The API's and the collector's listen addresses (or their defaults) and every frontend, each with
    the place in the file that sets it."""
    found: dict[Listener, Location] = {}

    def add(location: Location, value: Any, protocol: Any) -> None:
        if not isinstance(value, str) or protocol not in ("tcp", "udp"):
            return
        try:
            host, port = parse_address(value)
        except ValueError:
            return
        found[Listener(dotted(location), host, port, protocol)] = location

    api, collector = section(data, "api"), section(data, "collector")
    add(("api", "listen"), api.get("listen", ApiConfig.model_fields["listen"].default), "tcp")
    add(
        ("collector", "listen"),
        collector.get("listen", CollectorConfig.model_fields["listen"].default),
        collector.get("protocol", CollectorConfig.model_fields["protocol"].default),
    )
    services = data.get("services")
    for index, service in enumerate(services if isinstance(services, list) else []):
        if isinstance(service, dict):
            add(("services", index, "frontend"), service.get("frontend"), "tcp")
    return found


def section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def key_lines(node: yaml.Node | None, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each key path in a composed YAML document to its 1-based line number."""
    lines: dict[tuple[Any, ...], int] = {}
    if node is None:
        return lines
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            lines.update(key_lines(value_node, path))
            lines[path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            lines.update(key_lines(item, (*prefix, position)))
    return lines


def line_of(location: tuple[Any, ...], lines: dict[Location, int]) -> int:
    """The line of the longest prefix of `location` present in the file (a missing key → its parent)."""
    for end in range(len(location), -1, -1):
        line = lines.get(location[:end])
        if line is not None:
            return line
    return 1

"""Rollout hooks: webhooks and commands run at fixed points of a rollout, and the generated load test.

When each kind runs and what its failure means is the controller's business (see `HookConfig`); this
module only runs them. Errors are data: `run_hook` never raises. A hook that fails, times out or cannot
even start gives a `HookResult` with `ok=False` and a `detail` saying what failed and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from fridaymorning.config import HookConfig, HookKind, LoadTestConfig, parse_address
from fridaymorning.controller.phases import RolloutState
from fridaymorning.errors import ConfigError
from fridaymorning.loadgen.traffic import TrafficGenerator

log = logging.getLogger(__name__)

# Retry k waits k times this: a flapping endpoint gets a moment to recover, and a dead one costs little.
RETRY_BACKOFF_S = 0.5
# Only the end of a command's output is kept: a chatty command must not fill the controller's memory.
OUTPUT_TAIL_BYTES = 4096
OUTPUT_TAIL_LINES = 10
# Output kept from a webhook's answer, and the longest line quoted in a detail.
EXCERPT_CHARS = 200
# After a command exits, a background child may still hold its pipes open; stop reading after this.
DRAIN_GRACE_S = 1.0
# A frontend bound to every address also listens on loopback, the only target a load test accepts.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}

__all__ = [
    "HookContext",
    "HookResult",
    "LoadTest",
    "all_ok",
    "describe_failures",
    "load_tests",
    "run_hook",
    "run_hooks",
]


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a hook is told about the rollout it runs for. `step` is 1-based, as people count."""

    service: str
    rollout_id: int
    version: str
    baseline: str
    phase: str
    step: int
    canary_weight: int
    frontend: str
    reason: str = ""

    @classmethod
    def for_rollout(cls, rollout: RolloutState, frontend: str, reason: str | None = None) -> HookContext:
        """The context of `rollout` as persisted; `reason` overrides the rollout's own."""
        return cls(
            service=rollout.service,
            rollout_id=rollout.id,
            version=rollout.version,
            baseline=rollout.baseline,
            phase=rollout.phase.value,
            step=rollout.step_index + 1,
            canary_weight=rollout.canary_weight,
            frontend=frontend,
            reason=rollout.reason if reason is None else reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def environment(self) -> dict[str, str]:
        """The FM_* variables a command hook receives on top of the controller's environment."""
        return {f"FM_{key.upper()}": str(value) for key, value in self.to_dict().items()}


@dataclass(frozen=True, slots=True)
class HookResult:
    """The outcome of one hook, after its retries. `output` is the end of what it printed or answered."""

    name: str
    kind: HookKind
    ok: bool
    detail: str
    attempts: int
    duration_s: float
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One try of a hook. `retryable` is False when trying again cannot help (a missing program)."""

    ok: bool
    detail: str
    output: str = ""
    retryable: bool = True


async def run_hook(
    hook: HookConfig,
    context: HookContext,
    *,
    cwd: str | None = None,
    backoff_s: float = RETRY_BACKOFF_S,
) -> HookResult:
    """Run a url or command hook with its retries. Never raises (except on cancellation).

    `cwd` is where a command runs, so a relative program path resolves like the config's other paths.
    """
    started = time.monotonic()
    try:
        attempt, attempts = await _with_retries(_attempt_of(hook, context, cwd), hook.retries, backoff_s)
    except Exception as error:  # a bug here must become a failed hook, not a crashed controller
        log.exception("hook %r failed unexpectedly", hook.name)
        attempt, attempts = _Attempt(False, f"unexpected error: {error!r}"), 1
    detail = attempt.detail if attempts == 1 else f"{attempt.detail} after {attempts} attempts"
    duration_s = time.monotonic() - started
    if not attempt.ok:
        log.warning("hook %r (%s) failed: %s", hook.name, hook.kind, detail)
    return HookResult(hook.name, hook.kind, attempt.ok, detail, attempts, duration_s, attempt.output)


async def run_hooks(
    hooks: Sequence[HookConfig],
    kind: HookKind,
    context: HookContext,
    *,
    cwd: str | None = None,
    backoff_s: float = RETRY_BACKOFF_S,
) -> list[HookResult]:
    """Run the url and command hooks of `kind` one after another, in config order, and return every result.

    Order matters (a migration before a smoke test), so they never overlap. Load tests are skipped: they
    run for the whole rollout, through `LoadTest`.
    """
    results = []
    for hook in hooks:
        if hook.kind == kind and hook.load_test is None:
            results.append(await run_hook(hook, context, cwd=cwd, backoff_s=backoff_s))
    return results


def all_ok(results: Sequence[HookResult]) -> bool:
    """True when every hook succeeded (and when there were none)."""
    return all(result.ok for result in results)


def describe_failures(results: Sequence[HookResult]) -> str:
    """One line naming each failed hook and why, for a rollout's reason: "hook 'smoke': HTTP 500"."""
    return "; ".join(f"hook {result.name!r}: {result.detail}" for result in results if not result.ok)


async def _with_retries(
    attempt_once: Callable[[], Awaitable[_Attempt]], retries: int, backoff_s: float
) -> tuple[_Attempt, int]:
    """Try up to 1 + `retries` times; return the last attempt and how many were made."""
    attempts = 1
    attempt = await attempt_once()
    while not attempt.ok and attempt.retryable and attempts <= retries:
        await asyncio.sleep(backoff_s * attempts)
        attempts += 1
        attempt = await attempt_once()
    return attempt, attempts


def _attempt_of(hook: HookConfig, context: HookContext, cwd: str | None) -> Callable[[], Awaitable[_Attempt]]:
    """The coroutine function that tries `hook` once."""
    if hook.url is not None:
        url, payload = hook.url, {"hook": hook.name, "kind": hook.kind, **context.to_dict()}
        return lambda: _post_once(url, payload, hook.timeout_s)
    if hook.command is not None:
        argv, env = hook.command, {**os.environ, **context.environment()}
        return lambda: _exec_once(argv, env, cwd, hook.timeout_s)
    return _load_test_misuse


async def _load_test_misuse() -> _Attempt:
    return _Attempt(False, "a load_test hook runs for the whole rollout through LoadTest", retryable=False)


async def _post_once(url: str, payload: dict[str, Any], timeout_s: float) -> _Attempt:
    """POST `payload` once; success is a 2xx answer within `timeout_s` overall."""
    try:
        # httpx's timeout bounds each phase; the outer one bounds the whole exchange (a trickling answer).
        async with (
            asyncio.timeout(timeout_s),
            httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client,
        ):
            response = await client.post(url, json=payload)
    except (TimeoutError, httpx.TimeoutException):
        return _Attempt(False, f"timed out after {timeout_s:g} s")
    except httpx.HTTPError as error:
        return _Attempt(False, f"request failed: {str(error) or type(error).__name__}")
    return _Attempt(response.is_success, f"HTTP {response.status_code}", response.text[:EXCERPT_CHARS])


async def _exec_once(argv: list[str], env: dict[str, str], cwd: str | None, timeout_s: float) -> _Attempt:
    """Run `argv` once (never through a shell); success is exit status 0 within `timeout_s`."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group, so a timeout can kill its children too
        )
    except FileNotFoundError:
        return _Attempt(False, f"program {argv[0]!r} not found", retryable=False)
    except PermissionError:
        return _Attempt(False, f"program {argv[0]!r} is not executable", retryable=False)
    except OSError as error:
        return _Attempt(False, f"cannot run {argv[0]!r}: {error.strerror or error}", retryable=False)
    stdout, stderr = _OutputTail(), _OutputTail()
    readers = [
        asyncio.create_task(stdout.read(process.stdout)),
        asyncio.create_task(stderr.read(process.stderr)),
    ]
    try:
        async with asyncio.timeout(timeout_s):
            returncode = await process.wait()
    except TimeoutError:
        _kill_group(process)
        await process.wait()
        return _Attempt(False, f"timed out after {timeout_s:g} s", _joined(stdout, stderr))
    finally:
        if process.returncode is None:  # cancelled: leave nothing running behind us
            _kill_group(process)
        await _stop_reading(readers)
    return _Attempt(returncode == 0, _exit_detail(returncode, stdout, stderr), _joined(stdout, stderr))


class _OutputTail:
    """The last OUTPUT_TAIL_BYTES of a stream."""

    def __init__(self) -> None:
        self._data = bytearray()

    async def read(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            self._data += chunk
            del self._data[:-OUTPUT_TAIL_BYTES]

    def lines(self) -> list[str]:
        text = self._data.decode(errors="replace")
        return [line for line in text.splitlines() if line.strip()][-OUTPUT_TAIL_LINES:]


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # Only called while the leader is alive and unreaped, so its pid cannot name another group yet.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _stop_reading(readers: list[asyncio.Task[None]]) -> None:
    _, pending = await asyncio.wait(readers, timeout=DRAIN_GRACE_S)
    for reader in pending:
        reader.cancel()


def _exit_detail(returncode: int, stdout: _OutputTail, stderr: _OutputTail) -> str:
    """'exit status 2: <last stderr line>', or the signal that ended the command."""
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    detail = f"exit status {returncode}"
    last_lines = stderr.lines() or stdout.lines()
    if returncode != 0 and last_lines:
        detail += f": {last_lines[-1].strip()[:EXCERPT_CHARS]}"
    return detail


def _joined(stdout: _OutputTail, stderr: _OutputTail) -> str:
    return "\n".join(stdout.lines() + stderr.lines())


def load_tests(hooks: Sequence[HookConfig]) -> list[LoadTest]:
    """A LoadTest for each load_test hook, in config order, not started."""
    return [LoadTest(hook.load_test, name=hook.name) for hook in hooks if hook.load_test is not None]


class LoadTest:
    """Generated GET traffic through a service's frontend while a rollout runs, in the current event loop.

    The frontend must be on loopback (or a wildcard bind, reached through loopback): fridaymorning will not
    load anyone else's server. `stop` returns the tally per answering version, as TrafficGenerator counts it.
    """

    def __init__(self, config: LoadTestConfig, *, name: str = "load_test") -> None:
        self.config = config
        self.name = name
        self._generator: TrafficGenerator | None = None

    @property
    def running(self) -> bool:
        return self._generator is not None

    def start(self, frontend: str) -> None:
        """Send traffic to `http://<frontend><path>` until stop(). A non-loopback frontend: ConfigError."""
        if self._generator is not None:
            raise RuntimeError(f"load test {self.name!r} is already running")
        url = self.url_for(frontend)
        try:
            generator = TrafficGenerator(url, self.config.rate_per_s, self.config.concurrency)
        except ValueError as error:
            raise ConfigError(f"load test {self.name!r} cannot run against {frontend}: {error}") from None
        generator.start()
        self._generator = generator
        log.info("load test %r started: %s at %g/s", self.name, url, self.config.rate_per_s)

    async def stop(self) -> dict[str, dict[str, int]]:
        """Stop, wait for requests in flight, and return {version: {requests, errors, transport_errors}}."""
        generator, self._generator = self._generator, None
        if generator is None:
            return {}
        try:
            await generator.stop()
        except Exception:  # the tally so far is still worth reporting
            log.exception("load test %r ended with an error", self.name)
        return generator.snapshot()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The tally so far, without stopping."""
        return self._generator.snapshot() if self._generator is not None else {}

    def url_for(self, frontend: str) -> str:
        """The URL traffic goes to: 'HOST:PORT' + the configured path, brackets around an IPv6 host."""
        try:
            host, port = parse_address(frontend)
        except ValueError as error:
            raise ConfigError(f"load test {self.name!r}: bad frontend: {error}") from None
        host = WILDCARD_HOSTS.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}{self.config.path}"

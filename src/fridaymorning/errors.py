"""Exceptions raised by fridaymorning.

The hierarchy::

    FridayMorningError
    ├── ConfigError              invalid configuration: names the file, the line and the field
    ├── MissingBinaryError       a required program is not installed: says how to install it
    ├── PortInUseError           a listen address is already taken
    ├── AlreadyRunningError      another `fm up` holds the state directory
    ├── RouterError              the HAProxy runtime API refused or failed a command
    │   ├── WeightMismatchError  a weight read back differs from the weight that was set
    │   └── InstanceLagError     a fleet's instance did not take a change, even after retries
    ├── PlatformError            an instance could not be started, or never became healthy
    ├── StoreError               the metric or state store failed
    ├── ProviderError            a metric provider's query failed or gave no number
    └── RolloutError             a rollout action is refused in the current phase
"""

from __future__ import annotations


class FridayMorningError(Exception):
    """Base class of every error fridaymorning raises on purpose."""


class ConfigError(FridayMorningError):
    """The configuration is invalid. The message names the file, the line and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class MissingBinaryError(FridayMorningError):
    """A required program is missing. The message says how to install it."""

    def __init__(self, binary: str, package: str | None = None) -> None:
        self.binary = binary
        package = package or binary
        super().__init__(
            f"'{binary}' was not found on PATH. Install it with: sudo apt-get install -y {package}"
        )


class PortInUseError(FridayMorningError):
    """A listen address is already in use by another program."""

    def __init__(self, host: str, port: int, what: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"{what} cannot listen on {host}:{port}: the port is already in use. "
            "Stop the other program or choose another port in the config."
        )


class AlreadyRunningError(FridayMorningError):
    """Another `fm up` runs with the same state directory. The message names its pid."""

    def __init__(self, pid: str, state_dir: object) -> None:
        self.pid = pid
        super().__init__(f"already running (pid {pid}): another `fm up` uses the state directory {state_dir}")


class RouterError(FridayMorningError):
    """The HAProxy runtime API refused or failed a command."""


class WeightMismatchError(RouterError):
    """A weight read back from HAProxy differs from the weight that was just set."""


class InstanceLagError(RouterError):
    """Some HAProxy instances of a fleet did not take a change, even after retries.

    The others did; the fleet keeps retrying the lagging ones in the background. `instances` names
    them. A rollout does not move forward while one lags; a rollback goes on without waiting.
    """

    def __init__(self, message: str, instances: tuple[str, ...]) -> None:
        self.instances = instances
        super().__init__(message)


class PlatformError(FridayMorningError):
    """An instance could not be started, or did not become healthy in time."""


class StoreError(FridayMorningError):
    """The metric store or the state store failed."""


class RolloutError(FridayMorningError):
    """A rollout action makes no sense in the current phase. The message gives the reason."""


class ProviderError(FridayMorningError):
    """A metric provider's query failed (HTTP error, timeout, bad query) or gave no single number."""

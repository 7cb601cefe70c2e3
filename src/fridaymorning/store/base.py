"""The MetricStore role: keeps per-second windows and serves them back for analysis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fridaymorning.models import Window


class MetricStore(Protocol):
    """Per-second, per-version windows. Calls are blocking; the async loop runs them in a thread."""

    def write(self, windows: Sequence[Window]) -> None:
        """Persist windows. Two windows with the same key are merged when read back."""
        ...

    def query(self, backend: str, version: str, start: int, end: int) -> list[Window]:
        """Windows of `version` on `backend` with start <= second < end, one per second, in time order."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...

"""The state store: transitions persist, a second active rollout is refused, promotion moves stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from fridaymorning.controller.phases import RolloutPhase
from fridaymorning.controller.state import StateStore
from fridaymorning.errors import RolloutError


def test_rollout_lifecycle_persists_across_reopen(tmp_path: Path) -> None:
    """Every transition is stored with its event; a reopened store sees the same state."""
    store = StateStore(tmp_path / "state.db")
    rollout = store.create_rollout("web", "v2", "v1", now=100.0)
    rollout = store.transition(
        rollout, 101.0, "step", "step 1", phase=RolloutPhase.PROGRESSING, canary_weight=10
    )
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    loaded = reopened.rollout(rollout.id)
    assert loaded is not None
    assert (loaded.phase, loaded.canary_weight, loaded.reason) == (RolloutPhase.PROGRESSING, 10, "step 1")
    assert [event["kind"] for event in reopened.events(rollout.id)] == ["started", "step"]


def test_second_active_rollout_is_refused(tmp_path: Path) -> None:
    """While a rollout of a service is active another deploy is refused with the reason."""
    store = StateStore(tmp_path / "state.db")
    store.create_rollout("web", "v2", "v1", now=1.0)
    with pytest.raises(RolloutError, match="still starting"):
        store.create_rollout("web", "v3", "v1", now=2.0)
    store.create_rollout("api", "v3", "v1", now=2.0)  # other services are independent


def test_promotion_changes_the_stable_version(tmp_path: Path) -> None:
    """After PROMOTED the service's stable version is the canary's, and deploys are allowed again."""
    store = StateStore(tmp_path / "state.db")
    assert store.stable_version("web", default="v1") == "v1"
    rollout = store.create_rollout("web", "v2", "v1", now=1.0)
    store.transition(rollout, 2.0, "promoted", "ok", phase=RolloutPhase.PROMOTED, finished_at=2.0)
    assert store.stable_version("web", default="v1") == "v2"
    assert store.active_rollout("web") is None

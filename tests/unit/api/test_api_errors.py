"""Bad API calls get a 4xx with a reason: the status says what kind of mistake, `detail` says which.

Also the calls schemathesis once answered with a 500, pinned as 4xx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from fridaymorning.api.dependencies import SQLITE_MAX_INTEGER
from fridaymorning.api.metrics import MAX_QUERY_SPAN_S
from fridaymorning.errors import StoreError

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from tests.unit.api.conftest import Served


def deploy(served: Served, service: str, body: Any) -> Any:
    """POST a deploy with the token."""
    return served.client.post(f"/api/v1/services/{service}/deploy", json=body, headers=served.auth)


def metrics(served: Served, service: str = "web", **query: Any) -> Any:
    """GET a service's metrics with `query`, defaulting to a valid one-minute span."""
    return served.client.get(
        f"/api/v1/services/{service}/metrics", params={"version": "v1", "start": 1000, "end": 1060, **query}
    )


def phase_of(served: Served, rollout_id: int) -> str:
    """A rollout's phase, read from the state store (callable on the app's loop)."""
    state = served.runtime.states.rollout(rollout_id)
    assert state is not None
    return state.phase.value


def reasons_of(answer: Any) -> str:
    """The reason in an error body: `detail` itself, or the messages of a validation error."""
    detail = answer.json()["detail"]
    return detail if isinstance(detail, str) else "; ".join(error["msg"] for error in detail)


def test_unknown_service_gets_404_naming_the_configured_ones(served: Served) -> None:
    """Deploying to, or reading metrics of, an unknown service is a 404 listing the services there are."""
    for answer in (deploy(served, "nope", {"version": "v2"}), metrics(served, "nope")):
        assert answer.status_code == 404
        assert answer.json() == {"detail": "no service named 'nope'; configured services: shop, web"}
    assert served.runtime.states.rollouts() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/rollouts/999"),
        ("POST", "/api/v1/rollouts/999/retry"),
        ("POST", "/api/v1/rollouts/999/abort"),
        ("POST", "/api/v1/rollouts/999/promote"),
    ],
)
def test_unknown_rollout_gets_404(served: Served, method: str, path: str) -> None:
    """Reading or commanding a rollout id that was never created is a 404 naming the id."""
    answer = served.client.request(method, path, headers=served.auth)
    assert answer.status_code == 404
    assert answer.json() == {"detail": "no rollout 999"}


@pytest.mark.parametrize("version", ["-v2", "v2 beta", "v2/../../etc", "v__2", "é2"])
def test_bad_version_gets_409_stating_the_rule(served: Served, version: str) -> None:
    """A version the version rule refuses is a 409 that quotes the rule; no rollout starts."""
    answer = deploy(served, "web", {"version": version})
    assert answer.status_code == 409
    assert "must start with a letter or digit and contain only letters, digits" in reasons_of(answer)
    assert served.runtime.states.rollouts() == []


def test_deploying_the_stable_version_gets_409(served: Served) -> None:
    """Deploying what already runs as stable is a 409 saying so."""
    answer = deploy(served, "web", {"version": "v1"})
    assert answer.status_code == 409
    assert reasons_of(answer) == "v1 is already the stable version of web"


def test_a_second_deploy_while_one_runs_gets_409_naming_the_running_rollout(served: Served) -> None:
    """While a rollout of a service runs, another deploy of it is a 409 that names the running one."""
    first = deploy(served, "web", {"version": "v2"})
    assert first.status_code == 202
    answer = deploy(served, "web", {"version": "v3"})
    assert answer.status_code == 409
    assert reasons_of(answer).startswith(f"rollout {first.json()['id']} of web (v2) is still")


def test_a_command_the_phase_does_not_allow_gets_409_with_the_allowed_phases(served: Served) -> None:
    """Approving a canary not awaiting approval, or retrying one still running, is a 409 saying why."""
    rollout = deploy(served, "web", {"version": "v2"}).json()["id"]
    served.wait_until(lambda: phase_of(served, rollout) == "progressing")
    approve = served.client.post(f"/api/v1/rollouts/{rollout}/approve", headers=served.auth)
    assert approve.status_code == 409
    assert "allowed only while awaiting_approval" in reasons_of(approve)
    retry = served.client.post(f"/api/v1/rollouts/{rollout}/retry", headers=served.auth)
    assert retry.status_code == 409
    assert "only rolled back or aborted" in reasons_of(retry)


@pytest.mark.parametrize(
    ("content", "error_type"),
    [
        (b'{"version": ', "json_invalid"),
        (b"version=v2", "json_invalid"),
        (b"[1, 2]", "model_attributes_type"),
        (b'{"verison": "v2"}', "missing"),
        (b'{"version": ""}', "string_too_short"),
        (b'{"version": 2}', "string_type"),
    ],
)
def test_malformed_deploy_body_gets_422_saying_what_is_wrong(
    served: Served, content: bytes, error_type: str
) -> None:
    """A body that is not JSON, or not `{"version": <string>}`, is a 422 with the error's type and text."""
    answer = served.client.post(
        "/api/v1/services/web/deploy",
        content=content,
        headers={**served.auth, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["type"] == error_type and error["msg"]
    assert served.runtime.states.rollouts() == []


def test_a_body_that_is_not_utf8_gets_400(served: Served) -> None:
    """Bytes that are not text at all are a 400 saying the body could not be parsed."""
    answer = served.client.post(
        "/api/v1/services/web/deploy",
        content=b"\xff\xfe{",
        headers={**served.auth, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json() == {"detail": "There was an error parsing the body"}


@pytest.mark.parametrize(
    ("start", "end"),
    [(1000, 1000), (1060, 1000), (0, MAX_QUERY_SPAN_S + 1)],
    ids=["empty", "reversed", "too long"],
)
def test_metrics_span_that_is_empty_reversed_or_too_long_gets_422(
    served: Served, start: int, end: int
) -> None:
    """`end` must come after `start`, by at most a day: else a 422 on `end`, shaped like every other 422."""
    answer = metrics(served, start=start, end=end)
    assert answer.status_code == 422
    assert answer.json()["detail"] == [
        {
            "type": "value_error",
            "loc": ["query", "end"],
            "msg": f"end must be after start, by at most {MAX_QUERY_SPAN_S} s",
            "input": end,
        }
    ]


def test_metrics_of_a_good_span_are_served(served: Served) -> None:
    """A valid query is answered 200 with the totals (zero here: nothing was written)."""
    answer = metrics(served)
    assert answer.status_code == 200
    assert answer.json()["requests"] == 0 and answer.json()["seconds"] == []


def test_a_failing_metric_store_gets_503_with_its_error(served: Served) -> None:
    """When the metric store fails, or is not open, the answer is a 503 that says so, not a 500."""
    served.runtime.memory.fail_with = StoreError("disk I/O error")
    answer = metrics(served)
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the metric store failed: disk I/O error"}
    served.runtime.metrics = None
    answer = metrics(served)
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the metric store is not open"}


def test_a_failing_state_store_gets_503_with_its_error(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy the state store cannot record is a 503 that passes the store's reason on, not a 500."""

    def locked(*_: Any) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(served.runtime.states, "create_rollout", locked)
    answer = deploy(served, "web", {"version": "v2"})
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the controller could not do this: database is locked"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/v1/rollouts/{SQLITE_MAX_INTEGER + 1}"),
        ("POST", f"/api/v1/rollouts/{SQLITE_MAX_INTEGER + 1}/retry"),
        ("POST", "/api/v1/rollouts/2719356340265952796075564730534592512/resume"),
        ("POST", "/api/v1/rollouts/-177398743976266094870528/retry"),
        ("GET", "/api/v1/rollouts/0"),
    ],
)
def test_rollout_ids_sqlite_cannot_hold_get_422_not_500(served: Served, method: str, path: str) -> None:
    """Ids outside 1..2**63-1 (SQLite's INTEGER) are a 422 naming the bound; they once overflowed to a 500."""
    answer = served.client.request(method, path, headers=served.auth)
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["path", "rollout_id"]
    assert error["type"] in ("greater_than_equal", "less_than_equal")


def test_metrics_seconds_sqlite_cannot_hold_get_422(served: Served) -> None:
    """Seconds beyond SQLite's INTEGER are a 422 on the parameter, before any store is asked."""
    answer = metrics(served, start=SQLITE_MAX_INTEGER, end=SQLITE_MAX_INTEGER + 1)
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["query", "end"]]


def test_an_unknown_command_gets_422_listing_the_commands(served: Served) -> None:
    """A command that does not exist is a 422 that lists the ones that do."""
    answer = served.client.post("/api/v1/rollouts/1/explode", headers=served.auth)
    assert answer.status_code == 422
    assert "'promote', 'abort', 'approve', 'pause' or 'resume'" in reasons_of(answer)


def test_overlong_version_gets_422_naming_the_limit(served: Served) -> None:
    """A version longer than the rule allows is refused by the request's schema, with the limit."""
    answer = served.client.post(
        "/api/v1/services/web/deploy", json={"version": "v" * 60}, headers=served.auth
    )
    assert answer.status_code == 422
    assert "at most 51 characters" in str(answer.json()["detail"])

"""Schemathesis against the app's own /openapi.json: no call, valid or not, gets a 5xx.

Every operation the schema lists is fed schemathesis' valid (positive) and invalid (negative) data,
with the bearer token, so the state-changing operations run for real: fuzzed deploys start rollouts
on the fake platform and fuzzed commands reach them. Drawn names and ids rarely exist, so a second
pass pins them to the configured services and to rollouts that do exist. Responses are checked
against the schema too: status codes, content types and bodies. The event stream never ends, so
schemathesis leaves it alone.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from tests.unit.api.conftest import Served

EXAMPLES_PER_OPERATION = 30
NEVER_ENDING = "/api/v1/events"

# Not a 5xx, and the response is what the schema promises. Not `negative_data_rejection`: the API
# ignores query parameters it does not know, as HTTP APIs do, and schemathesis counts an unknown
# (even nameless) one as invalid data that must be refused.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def load_schema(served: Served) -> schemathesis.BaseSchema:
    """The schema the app serves at /openapi.json, minus the never-ending event stream."""
    return schemathesis.openapi.from_asgi("/openapi.json", served.app).exclude(path=NEVER_ENDING)


def send(served: Served, case: schemathesis.Case[Any]) -> httpx.Response:
    """Send a generated case with the token, on the controllers' event loop (see conftest)."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(
        base_url=str(served.client.base_url), headers=served.auth
    )
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)  # httpx deprecates per-request cookies; the API reads none
    if "data" in kwargs:
        kwargs["content"] = kwargs.pop("data")  # a raw body: httpx names it `content`
    response: httpx.Response = served.client.request(**kwargs)
    return response


def fuzz_operation(
    served: Served,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    path_parameters: dict[str, Any] | None,
    answers: Counter[tuple[str, int]],
) -> None:
    """Send one operation's drawn cases and check each answer; raises what schemathesis found."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        response = send(served, case)
        answers[operation.label, response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if 400 <= response.status_code < 500:
            assert response.json()["detail"], f"a {response.status_code} without a reason"

    run()


def fuzz(
    served: Served, mode: GenerationMode, pinned: dict[str, dict[str, Any]] | None = None
) -> tuple[list[str], Counter[tuple[str, int]]]:
    """Fuzz every operation (only those in `pinned`, with those path parameters, if given).

    The failures, and how often each operation answered with each status.
    """
    failures = []
    answers: Counter[tuple[str, int]] = Counter()
    for result in load_schema(served).get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        path_parameters = (pinned or {}).get(operation.path)
        if pinned is not None and path_parameters is None:
            continue
        try:
            fuzz_operation(served, operation, mode, path_parameters, answers)
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # no parameter or body to make invalid
        except (Exception, BaseExceptionGroup) as error:  # schemathesis reports failures as a group
            failures.append(f"{operation.label} ({mode}, pinned {path_parameters}):\n{error}")
    return failures, answers


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_drawn_calls_get_no_server_error(served: Served, mode: GenerationMode) -> None:
    """Every operation, fed drawn service names, rollout ids, versions, queries and bodies, answers below 500,
    with a response that matches the schema, and every 4xx says why in `detail`."""
    failures, _ = fuzz(served, mode)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_calls_on_real_services_and_rollouts_get_no_server_error(
    served: Served, mode: GenerationMode
) -> None:
    """With the service and rollout pinned to ones that exist, fuzzed deploys, retries and commands walk real
    rollouts through their phases; every answer is still below 500, matches the schema, and a 4xx says why."""
    web = served.client.post("/api/v1/services/web/deploy", json={"version": "v2"}, headers=served.auth)
    shop = served.client.post("/api/v1/services/shop/deploy", json={"version": "v2"}, headers=served.auth)
    assert web.status_code == shop.status_code == 202, (web.text, shop.text)
    answers: Counter[tuple[str, int]] = Counter()
    for rollout_id in (web.json()["id"], shop.json()["id"]):
        pinned = {
            "/api/v1/rollouts/{rollout_id}": {"rollout_id": rollout_id},
            "/api/v1/rollouts/{rollout_id}/retry": {"rollout_id": rollout_id},
            "/api/v1/rollouts/{rollout_id}/{action}": {"rollout_id": rollout_id},
        }
        failures, seen = fuzz(served, mode, pinned)
        assert not failures, "\n\n".join(failures)
        answers += seen
    for service in ("web", "shop"):
        pinned = {
            "/api/v1/services/{service}/deploy": {"service": service},
            "/api/v1/services/{service}/metrics": {"service": service},
        }
        failures, seen = fuzz(served, mode, pinned)
        assert not failures, "\n\n".join(failures)
        answers += seen
    if mode is GenerationMode.POSITIVE:  # the token worked: commands and deploys were accepted
        assert not [key for key in answers if key[1] == 401], answers
        assert answers["POST /api/v1/rollouts/{rollout_id}/{action}", 202] > 0, answers
        assert answers["POST /api/v1/services/{service}/deploy", 202] > 0, answers

"""Every state-changing route, found in the app's own route table, needs the bearer token.

The routes are read from the app's route table (through the routers it includes), not listed here: a new
POST (or PUT, PATCH, DELETE) route is covered the day it is added, and one whose path parameters have no
sample value here fails loudly.
"""

from __future__ import annotations

import asyncio
import re
import typing
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from fridaymorning.controller.loop import rollout_dict

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from tests.unit.api.conftest import Served

READ_METHODS = {"GET", "HEAD", "OPTIONS"}

# Authorization headers that must not pass: none, a wrong token, the token under another scheme,
# the scheme without a token, and bytes outside ASCII (once a 500: compare_digest refuses non-ASCII).
NOT_THE_TOKEN: dict[str, dict[str, Any]] = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": "Basic {token}"},
    "token without scheme": {"Authorization": "{token}"},
    "token with a suffix": {"Authorization": "Bearer {token}x"},
    "non-ASCII token": {"Authorization": b"Bearer \xe9t\xe9"},
}


def state_changing_routes(served: Served) -> list[APIRoute]:
    """The API's routes that take any method other than a read (the dashboard's, cookie-authenticated,
    are tested in test_dashboard.py)."""
    routes = [context.original_route for context in iter_route_contexts(served.app.routes)]
    return [
        route
        for route in routes
        if isinstance(route, APIRoute)
        and route.path.startswith("/api/")
        and set(route.methods or ()) - READ_METHODS
    ]


def urls_of(route: APIRoute, samples: dict[str, list[Any]]) -> list[str]:
    """The route's path with every combination of sample values for its parameters."""
    urls = [route.path]
    for name in re.findall(r"{(\w+)}", route.path):
        assert name in samples, f"no sample value for path parameter {name!r} of {route.path}: add one"
        urls = [url.replace("{" + name + "}", str(value)) for url in urls for value in samples[name]]
    return urls


def literal_values(route: APIRoute, name: str) -> list[Any]:
    """The values a Literal path parameter of `route` accepts."""
    (param,) = [p for p in route.dependant.path_params if p.name == name]
    return list(typing.get_args(param.field_info.annotation))


def deploy_and_settle(served: Served, service: str) -> int:
    """Deploy v2 of `service` with the token and wait until its rollout is judged; its id."""
    answer = served.client.post(
        f"/api/v1/services/{service}/deploy", json={"version": "v2"}, headers=served.auth
    )
    assert answer.status_code == 202, answer.text
    controller = served.runtime.controllers[service]
    served.wait_until(lambda: controller.last_verdict is not None)
    return int(answer.json()["id"])


def everything(served: Served) -> Any:
    """All state a call could change: rollouts, their events, stable versions, instances, weights."""
    runtime = served.runtime
    return (
        [rollout_dict(state) for state in runtime.states.rollouts(limit=1000)],
        [runtime.states.events(state.id) for state in runtime.states.rollouts(limit=1000)],
        {name: controller.snapshot() for name, controller in runtime.controllers.items()},
        {name: list(platform.running) for name, platform in runtime.platforms.items()},
        {name: list(router.share_history) for name, router in runtime.routers.items()},
    )


def samples_for(route: APIRoute, rollout_id: int) -> dict[str, list[Any]]:
    """Valid values for each path parameter: a real service, a running rollout, every action."""
    samples: dict[str, list[Any]] = {"service": ["web"], "rollout_id": [rollout_id]}
    if "{action}" in route.path:
        samples["action"] = literal_values(route, "action")
    return samples


@pytest.fixture
def rollout_id(served: Served) -> int:
    """A rollout of web, running and judged, so every command has something to act on."""
    return deploy_and_settle(served, "web")


def test_the_route_table_lists_the_state_changing_calls(served: Served) -> None:
    """Discovery finds every state-changing call: the table tests below test something."""
    paths = {route.path for route in state_changing_routes(served)}
    assert paths == {
        "/api/v1/haproxy/reload",
        "/api/v1/services/{service}/deploy",
        "/api/v1/rollouts/{rollout_id}/retry",
        "/api/v1/rollouts/{rollout_id}/{action}",
    }


@pytest.mark.parametrize("case", sorted(NOT_THE_TOKEN))
def test_state_changing_calls_without_the_token_get_401_and_change_nothing(
    served: Served, rollout_id: int, subtests: Any, case: str
) -> None:
    """Each state-changing route answers 401 with a reason and `WWW-Authenticate: Bearer` to a call with no
    token or a wrong one (never a 5xx), and nothing in the state store, the controllers, the platform or the
    router changes."""
    headers = {
        name: value.format(token=served.token) if isinstance(value, str) else value
        for name, value in NOT_THE_TOKEN[case].items()
    }
    before = everything(served)
    calls = 0
    for route in state_changing_routes(served):
        for method in sorted(set(route.methods or ()) - READ_METHODS):
            for url in urls_of(route, samples_for(route, rollout_id)):
                with subtests.test(method=method, url=url):
                    answer = served.client.request(method, url, json={"version": "v9"}, headers=headers)
                    assert answer.status_code == 401, answer.text
                    assert "bearer token" in answer.json()["detail"]
                    assert answer.headers["www-authenticate"] == "Bearer"
                    calls += 1
    assert calls >= 7  # deploy, retry and the five commands
    served.run(lambda: asyncio.sleep(0.2))  # a command that slipped through would be acted on by now
    assert everything(served) == before


def test_state_changing_calls_with_the_token_get_past_the_check(
    served: Served, rollout_id: int, subtests: Any
) -> None:
    """The same calls with the token are not refused for auth: the sample URLs above reach their handlers."""
    for route in state_changing_routes(served):
        for method in sorted(set(route.methods or ()) - READ_METHODS):
            for url in urls_of(route, samples_for(route, rollout_id)):
                with subtests.test(method=method, url=url):
                    answer = served.client.request(method, url, json={"version": "v9"}, headers=served.auth)
                    assert answer.status_code in (202, 409), answer.text


def test_reads_need_no_token(served: Served, rollout_id: int) -> None:
    """Reads stay open: status, services, rollouts and one rollout answer 200 without a token."""
    for url in ("/api/v1/status", "/api/v1/services", "/api/v1/rollouts", f"/api/v1/rollouts/{rollout_id}"):
        assert served.client.get(url).status_code == 200, url


def test_the_schema_declares_the_bearer_token_on_every_state_changing_call(served: Served) -> None:
    """/openapi.json says which calls need the token, so clients and fuzzers can send it."""
    document = served.client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the API token `fm up` wrote to its state directory",
    }
    for route in state_changing_routes(served):
        for method in set(route.methods or ()) - READ_METHODS:
            operation = document["paths"][route.path][method.lower()]
            assert operation["security"] == [{"HTTPBearer": []}], route.path
            assert "401" in operation["responses"], route.path

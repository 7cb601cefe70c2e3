"""Schemathesis against the app's own /openapi.json: no call, valid or not, gets a 5xx.

Requests carry the bearer token, so the state-changing operations run for real: fuzzed deploys
start rollouts on the fake platform and fuzzed commands reach them. The event stream never ends,
so it is left to its own test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from conftest import Served

schema = schemathesis.pytest.from_fixture("api_schema")


def send(served: Served, case: schemathesis.Case) -> httpx.Response:
    """Send a generated case through the test client, on the controllers' event loop."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=str(served.client.base_url), headers=served.auth)
    return served.client.request(**kwargs)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_call_gets_a_server_error(case: schemathesis.Case, served: Served) -> None:
    """Every operation, fed schemathesis' valid and invalid data with the token, answers below 500."""
    response = send(served, case)
    case.validate_response(response, checks=[not_a_server_error])

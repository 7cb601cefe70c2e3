"""The API's documentation: /docs works offline, and the OpenAPI document says what each call returns."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fixture's class, for annotations only: test directories are not packages
    from tests.unit.api.conftest import Served

# src="..." and href="..." in the page, and any absolute or protocol-relative URL anywhere in it.
REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")


def test_docs_page_loads_swagger_ui_from_the_api_itself(served: Served) -> None:
    """/docs names no other host: its script, stylesheet and icon come from the API, so it works offline."""
    page = served.client.get("/docs")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    assert EXTERNAL.findall(page.text) == []
    references = REFERENCE.findall(page.text)
    assert any(reference.endswith("swagger-ui-bundle.js") for reference in references)
    assert any(reference.endswith("swagger-ui.css") for reference in references)
    for reference in references:
        asset = served.client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 0, reference


def test_docs_page_does_not_ask_an_online_validator(served: Served) -> None:
    """Swagger UI's schema validator badge, which calls an online service, is turned off."""
    assert '"validatorUrl": null' in served.client.get("/docs").text


def test_openapi_declares_the_event_stream_as_text_event_stream(served: Served) -> None:
    """GET /api/v1/events answers text/event-stream, and the OpenAPI document says so (not JSON)."""
    operation = served.client.get("/openapi.json").json()["paths"]["/api/v1/events"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]


def test_the_event_stream_answers_with_the_declared_media_type(served: Served) -> None:
    """The stream's Content-Type is the one the OpenAPI document declares."""
    with served.client.stream("GET", "/api/v1/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(response.iter_lines())
    assert first == ": connected"


# Every operation the API offered when its routes were written inside create_app, read from that app's
# OpenAPI document: moving the routes into modules must neither add, drop nor rename one.
OPERATIONS = [
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/rollouts"),
    ("GET", "/api/v1/rollouts/{rollout_id}"),
    ("GET", "/api/v1/services"),
    ("GET", "/api/v1/services/{service}/metrics"),
    ("GET", "/api/v1/status"),
    ("GET", "/metrics"),  # Prometheus' exposition, added with it
    ("POST", "/api/v1/haproxy/reload"),
    ("POST", "/api/v1/rollouts/{rollout_id}/retry"),
    ("POST", "/api/v1/rollouts/{rollout_id}/{action}"),
    ("POST", "/api/v1/services/{service}/deploy"),
]
# The operations that change state: each must declare the bearer token, and only they.
TOKEN_OPERATIONS = [operation for operation in OPERATIONS if operation[0] == "POST"]


def test_openapi_lists_the_same_operations(served: Served) -> None:
    """The OpenAPI document lists exactly the paths and methods the API has always offered."""
    paths = served.client.get("/openapi.json").json()["paths"]
    assert sorted((method.upper(), path) for path, operations in paths.items() for method in operations) == (
        OPERATIONS
    )


def test_openapi_declares_the_token_on_every_change_and_only_there(served: Served) -> None:
    """Exactly the state-changing operations declare the bearer token, and document its 401."""
    paths = served.client.get("/openapi.json").json()["paths"]
    secured = sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if operation.get("security") == [{"HTTPBearer": []}] and "401" in operation["responses"]
    )
    assert secured == TOKEN_OPERATIONS

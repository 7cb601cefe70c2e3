"""The API's documentation page, `/docs`: Swagger UI served from the installed package, never a CDN.

FastAPI's own `/docs` loads Swagger UI's script and stylesheet from a CDN, so the page is blank on a
machine without internet access, and every visit tells a third party that the API exists. The
`fastapi-offline` package (MIT) ships Swagger UI's files (Apache-2.0); they are mounted under
STATIC_URL and the page points at them, so `/docs` names no other host.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
STATIC_URL = "/docs/static"
SWAGGER_FILES = Path(fastapi_offline.__file__).parent / "static"


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI at DOCS_URL from the package's files; `app` must be built with docs_url=None."""
    app.mount(STATIC_URL, StaticFiles(directory=SWAGGER_FILES), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png",
            # Swagger UI would otherwise ask an online validator about the schema.
            swagger_ui_parameters={"validatorUrl": None},
        )

"""HTTP client of a running `fm up`, as the CLI uses it."""

from __future__ import annotations

import os
from typing import Any

import httpx

from fridaymorning.config import Config, parse_address
from fridaymorning.errors import FridayMorningError, RolloutError

TOKEN_FILE = "api-token"
# A token given in the environment wins over the state directory's file: a CI runner gets it as a
# masked variable, since it may not read `fm up`'s state directory.
TOKEN_VARIABLE = "FM_API_TOKEN"


class ApiUnavailableError(FridayMorningError):
    """`fm up` is not running, or not at the configured address."""


class ApiClient:
    """Talks to the API of `fm up` at the config's address, with the token from FM_API_TOKEN or, when
    that is unset, from the state directory."""

    def __init__(self, config: Config, timeout_s: float = 10.0) -> None:
        host, port = parse_address(config.api.listen)
        self.root_url = f"http://{host}:{port}"
        self.base_url = f"{self.root_url}/api/v1"
        self.token_path = config.state_path(TOKEN_FILE)
        self._http = httpx.Client(timeout=timeout_s)

    def get(self, path: str, **params: Any) -> Any:
        # The token goes along when there is one: reads need it when the API listens beyond loopback.
        has_token = bool(token_from_environment()) or self.token_path.exists()
        headers = {"Authorization": f"Bearer {self._token()}"} if has_token else None
        return self._call("GET", path, params=params or None, headers=headers)

    def login_link(self, viewer: bool = False) -> str:
        """A one-time link that logs a browser in to the dashboard (admin, or read-only with `viewer`)."""
        answer = self._call(
            "POST",
            "/dashboard/login-link",
            base=self.root_url,
            params={"viewer": "true"} if viewer else None,
            headers={"Authorization": f"Bearer {self._token()}"},
        )
        return self.root_url + str(answer["path"])

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, json=body, headers={"Authorization": f"Bearer {self._token()}"})

    def _token(self) -> str:
        given = token_from_environment()
        if given:
            return given
        try:
            return self.token_path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ApiUnavailableError(
                f"no API token at {self.token_path} and {TOKEN_VARIABLE} is not set: "
                "start `fm up` with this config first"
            ) from error

    def _call(self, method: str, path: str, base: str | None = None, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, (base or self.base_url) + path, **kwargs)
        except httpx.TransportError as error:
            raise ApiUnavailableError(
                f"cannot reach fm up at {self.base_url} ({error.__class__.__name__}): is `fm up` running?"
            ) from error
        if response.status_code == 409:
            raise RolloutError(response.json().get("detail", response.text))
        if response.status_code >= 400:
            raise FridayMorningError(
                f"{method} {path} failed ({response.status_code}): {detail_of(response)}"
            )
        return response.json()


def token_from_environment() -> str:
    """The API token given in FM_API_TOKEN, or '' when it is unset or blank."""
    return os.environ.get(TOKEN_VARIABLE, "").strip()


def detail_of(response: httpx.Response) -> str:
    """The reason the API gave for a refusal."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text
    if isinstance(detail, list):  # FastAPI's validation errors: one message per field
        return "; ".join(f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg')}" for item in detail)
    return str(detail)

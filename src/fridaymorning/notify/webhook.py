"""The Notifier over webhooks: events posted to generic JSON webhooks or Slack-compatible incoming webhooks.

Notifications are best effort. A webhook that is down, slow or refusing is logged and counted, and never
raises into the controller: a rollback must not wait on, or fail because of, a chat service.
Webhook URLs often carry a secret token (Slack's do), so logs and stats name only the scheme and host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from fridaymorning.config import NotificationConfig

log = logging.getLogger(__name__)

__all__ = [
    "Notifiers",
    "WebhookNotifier",
    "generic_payload",
    "slack_payload",
]

# Headline emoji and wording per event: the colour tells good from bad news at a glance.
HEADLINES: dict[str, tuple[str, str]] = {
    "started": (":large_blue_circle:", "rollout started"),
    "step": (":large_blue_circle:", "step {step} at {canary_weight}%"),
    "held": (":large_yellow_circle:", "held"),
    "promoted": (":rocket:", "promoted"),
    "rolled_back": (":red_circle:", "rolled back"),
    "aborted": (":black_circle:", "aborted"),
}
# Slack refuses a header over 150 characters and a section text over 3000.
SLACK_HEADER_CHARS = 150
SLACK_TEXT_CHARS = 3000


def generic_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The body of a generic webhook: the event itself."""
    return event


def headline(event: dict[str, Any]) -> str:
    """':rocket: web v2 promoted'."""
    emoji, wording = HEADLINES.get(event["event"], (":grey_question:", str(event["event"])))
    return f"{emoji} {event['service']} {event['version']} {wording.format(**event)}"


def slack_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The body of a Slack incoming webhook: a fallback text, and blocks for the headline, why, and where."""
    title = headline(event)
    why = f"*Reason:* {_slack_escape(event['reason'] or 'none given')}"
    if event.get("explanation"):
        why += f"\n*Evidence:* {_slack_escape(event['explanation'])}"
    fields = {
        "Weight": f"{event['canary_weight']}%",
        "Step": str(event["step"]),
        "Phase": event["phase"],
        "Baseline": event["baseline"],
    }
    return {
        "text": _slack_escape(title),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": title[:SLACK_HEADER_CHARS], "emoji": True},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(why, SLACK_TEXT_CHARS)}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"}
                    for name, value in fields.items()
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"rollout #{event['rollout_id']} · {event['timestamp']}"}
                ],
            },
        ],
    }


def _slack_escape(text: str) -> str:
    # Slack reads <…> as links and mentions; these three are the escapes it documents.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


PAYLOADS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generic": generic_payload,
    "slack": slack_payload,
}


def redacted(url: str) -> str:
    """'https://hooks.slack.com/services/T/B/secret' → 'https://hooks.slack.com/…'."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{'/…' if parts.path.strip('/') else ''}"


class WebhookNotifier:
    """Posts the events its config subscribes to, in its format. Counts sent, failed and skipped events."""

    def __init__(self, config: NotificationConfig) -> None:
        self.config = config
        self.target = redacted(config.url)
        self._payload = PAYLOADS[config.format]
        self.sent = 0
        self.failed = 0
        self.skipped = 0  # events this webhook is not subscribed to
        self._latest: asyncio.Task[bool] | None = None

    def send_after_earlier(self, event: dict[str, Any]) -> asyncio.Task[bool]:
        """Post `event` in the background once every event given before it was delivered or given up.

        A receiver sees "started" before "step" before "promoted" whatever the network does. A slow
        webhook delays only its own later events, by at most its timeout each.
        """
        earlier = self._latest

        async def in_turn() -> bool:
            if earlier is not None:
                await asyncio.wait([earlier])  # its outcome is counted by itself; never raises here
            return await self.send(event)

        self._latest = asyncio.create_task(in_turn())
        return self._latest

    async def send(self, event: dict[str, Any]) -> bool:
        """Post `event` if subscribed; True when the webhook accepted it. Never raises."""
        if event.get("event") not in self.config.events:
            self.skipped += 1
            return False
        try:
            delivered = await self._post(self._payload(event))
        except Exception:  # a malformed event or a bug must not reach the controller
            log.exception("notification to %s failed", self.target)
            delivered = False
        if delivered:
            self.sent += 1
        else:
            self.failed += 1
        return delivered

    async def _post(self, payload: dict[str, Any]) -> bool:
        timeout_s = self.config.timeout_s
        try:
            # The environment's proxy settings are honoured: Slack and the like are usually outside.
            async with asyncio.timeout(timeout_s), httpx.AsyncClient(timeout=timeout_s) as client:
                response = await client.post(self.config.url, json=payload)
        except (TimeoutError, httpx.TimeoutException):
            log.warning("notification to %s timed out after %g s", self.target, timeout_s)
            return False
        except httpx.HTTPError as error:
            log.warning("notification to %s failed: %s", self.target, type(error).__name__)
            return False
        if not response.is_success:
            log.warning("notification to %s answered HTTP %d", self.target, response.status_code)
        return response.is_success

    def stats(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "format": self.config.format,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
        }


class Notifiers:
    """The Notifier of a service: every webhook it configures; `send` posts to all of them at once."""

    def __init__(self, configs: Iterable[NotificationConfig]) -> None:
        self.notifiers = [WebhookNotifier(config) for config in configs]

    async def send(self, event: dict[str, Any]) -> int:
        """Post `event` to every subscribed target concurrently; the number that accepted it. Never raises."""
        outcomes = await asyncio.gather(
            *(notifier.send(event) for notifier in self.notifiers), return_exceptions=True
        )
        return sum(outcome is True for outcome in outcomes)

    def send_in_background(self, event: dict[str, Any]) -> list[asyncio.Task[bool]]:
        """Queue `event` to every target, after the events queued before it; the delivery tasks."""
        return [notifier.send_after_earlier(event) for notifier in self.notifiers]

    def stats(self) -> dict[str, Any]:
        """Totals, and the counts of each target: {"sent", "failed", "skipped", "targets": [...]}."""
        targets = [notifier.stats() for notifier in self.notifiers]
        totals = {key: sum(target[key] for target in targets) for key in ("sent", "failed", "skipped")}
        return {**totals, "targets": targets}

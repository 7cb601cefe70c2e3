"""Rollout notifications: event contents, generic and Slack payloads posted to a real local receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from fridaymorning.analysis.verdict import Check, VerdictPhase, combine
from fridaymorning.config import NotificationConfig
from fridaymorning.controller.notify import build_event, explain
from fridaymorning.controller.phases import RolloutPhase, RolloutState
from fridaymorning.notify import Notifier, Notifiers, WebhookNotifier
from fridaymorning.notify.webhook import generic_payload, slack_payload
from fridaymorning.testing import WebhookReceiver

pytestmark = pytest.mark.timeout(30)

ROLLOUT = RolloutState(
    id=12,
    service="web",
    version="v2",
    baseline="v1",
    phase=RolloutPhase.ROLLING_BACK,
    step_index=1,
    canary_weight=25,
    started_at=1000.0,
    step_started_at=1100.0,
)
NOW = datetime(2024, 5, 17, 9, 30, 0, tzinfo=UTC)

FAILING = Check(
    "error_rate_slo",
    VerdictPhase.FAIL,
    statistic=0.052,
    bound=0.031,
    threshold=0.01,
    n=1200,
    detail="canary errors above the SLO",
)
HOLDING = Check("p99_slo", VerdictPhase.HOLD, math.nan, math.nan, 250.0, 0, "no canary latencies yet")
PASSING = Check("evidence", VerdictPhase.PASS, 1200, 1200, 100, 1200, "1200 of 100 canary requests")
VERDICT = combine((PASSING, HOLDING, FAILING)).to_dict()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver("/services/T000/B000/secret-token")
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Notifiers honour proxy settings; the local receiver must be reached directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def notification(url: str, **settings: Any) -> NotificationConfig:
    return NotificationConfig.model_validate({"url": url, **settings})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rolled_back_event() -> dict[str, Any]:
    return build_event("rolled_back", ROLLOUT, "the canary failed its checks", VERDICT, now=NOW)


def test_event_carries_the_rollout_and_is_strict_json() -> None:
    """An event names the rollout (1-based step), its time in UTC, and serialises without NaN."""
    event = rolled_back_event()
    assert {key: value for key, value in event.items() if key not in ("explanation", "verdict")} == {
        "event": "rolled_back",
        "service": "web",
        "rollout_id": 12,
        "version": "v2",
        "baseline": "v1",
        "phase": "rolling_back",
        "step": 2,
        "canary_weight": 25,
        "reason": "the canary failed its checks",
        "timestamp": "2024-05-17T09:30:00Z",
    }
    json.dumps(event, allow_nan=False)  # raises on NaN
    assert event["verdict"]["checks"][1]["statistic"] is None


def test_explanation_names_the_failing_check_with_its_numbers() -> None:
    """A failed verdict is explained by its failing checks' statistic, bound, threshold and n, not others."""
    explanation = explain(VERDICT)
    assert explanation == (
        "error_rate_slo failed: statistic 0.052, bound 0.031, threshold 0.01, n=1200"
        " — canary errors above the SLO"
    )
    assert rolled_back_event()["explanation"] == explanation


def test_explanation_of_a_held_verdict_shows_missing_numbers_as_na() -> None:
    """Holding checks are named; a statistic not measured yet reads 'n/a', not 'nan'."""
    explanation = explain(combine((PASSING, HOLDING)).to_dict())
    assert explanation.startswith("p99_slo holding: statistic n/a, bound n/a, threshold 250, n=0")


def test_explanation_includes_the_e_value_when_it_decided() -> None:
    """A check failed by its e-value shows the e-value and the value it fails at."""
    check = Check("p99_vs_baseline", VerdictPhase.FAIL, 1.8, math.nan, 1.2, 900, "", 45.0, 20.0)
    assert explain(combine((check,)).to_dict()) == (
        "p99_vs_baseline failed: statistic 1.8, bound n/a, threshold 1.2, n=900, e-value 45 of 20"
    )


def test_explanation_without_a_verdict_or_of_a_pass() -> None:
    """No verdict → empty explanation; a passing verdict → its reason."""
    assert explain(None) == ""
    assert explain(combine((PASSING,)).to_dict()) == "every check passed"


def test_slack_payload_has_a_headline_the_reason_and_fields() -> None:
    """The Slack body has a fallback text, a header with the kind's emoji, the evidence, and the numbers."""
    event = build_event("promoted", ROLLOUT, "every check passed", None, now=NOW)
    payload = slack_payload(event)
    assert payload["text"] == ":rocket: web v2 promoted"
    header, why, fields, context = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": payload["text"], "emoji": True},
    }
    assert why["text"] == {"type": "mrkdwn", "text": "*Reason:* every check passed"}
    assert [field["text"] for field in fields["fields"]] == [
        "*Weight*\n25%",
        "*Step*\n2",
        "*Phase*\nrolling_back",
        "*Baseline*\nv1",
    ]
    assert context["elements"][0]["text"] == "rollout #12 · 2024-05-17T09:30:00Z"


def test_slack_payload_escapes_markup_and_shows_the_evidence() -> None:
    """'<', '>' and '&' in reasons are escaped, so Slack shows them instead of reading links."""
    payload = slack_payload(rolled_back_event() | {"reason": "p99 > 250 ms & <rising>"})
    text = payload["blocks"][1]["text"]["text"]
    assert text.startswith(
        "*Reason:* p99 &gt; 250 ms &amp; &lt;rising&gt;\n*Evidence:* error_rate_slo failed"
    )
    assert payload["text"] == ":red_circle: web v2 rolled back"


def test_step_headline_gives_the_step_and_weight() -> None:
    """A step event's headline says which step and at what weight."""
    event = build_event("step", ROLLOUT, "advanced", None, now=NOW)
    assert slack_payload(event)["text"] == ":large_blue_circle: web v2 step 2 at 25%"


async def test_generic_notifier_posts_the_event_itself(receiver: WebhookReceiver) -> None:
    """A generic webhook receives the event as JSON, and the post is counted as sent."""
    notifier = WebhookNotifier(notification(receiver.url))
    event = rolled_back_event()
    assert await notifier.send(event) is True
    assert receiver.posts == [generic_payload(event)]
    assert (notifier.sent, notifier.failed, notifier.skipped) == (1, 0, 0)


async def test_slack_notifier_posts_the_slack_body(receiver: WebhookReceiver) -> None:
    """A slack-format webhook receives {"text", "blocks"}."""
    notifier = WebhookNotifier(notification(receiver.url, format="slack"))
    event = rolled_back_event()
    assert await notifier.send(event)
    assert receiver.posts == [slack_payload(event)]


async def test_events_not_subscribed_to_are_not_posted(receiver: WebhookReceiver) -> None:
    """A webhook subscribed to 'promoted' only gets nothing for a rollback; that counts as skipped."""
    notifier = WebhookNotifier(notification(receiver.url, events=["promoted"]))
    assert await notifier.send(rolled_back_event()) is False
    assert receiver.posts == []
    assert (notifier.sent, notifier.failed, notifier.skipped) == (0, 0, 1)


async def test_failures_are_counted_never_raised_and_keep_the_url_secret(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500, a refused connection and a timeout each count as failed; the log names only scheme and host."""
    receiver.failures_left = 1
    answering_500 = WebhookNotifier(notification(receiver.url))
    refused = WebhookNotifier(notification(f"http://127.0.0.1:{free_port()}/secret-token"))
    event = rolled_back_event()
    with caplog.at_level(logging.WARNING, logger="fridaymorning.controller.notify"):
        assert await answering_500.send(event) is False
        assert await refused.send(event) is False
        receiver.stall_s = 10
        slow = WebhookNotifier(notification(receiver.url, timeout_s=0.3))
        assert await slow.send(event) is False
    assert [notifier.failed for notifier in (answering_500, refused, slow)] == [1, 1, 1]
    assert "HTTP 500" in caplog.text and "timed out after 0.3 s" in caplog.text
    assert "secret-token" not in caplog.text


async def test_notifiers_fan_out_and_count_per_target(receiver: WebhookReceiver) -> None:
    """Notifiers posts to every target at once; one broken target does not stop the others."""
    notifiers = Notifiers(
        [
            notification(receiver.url),
            notification(receiver.url, format="slack"),
            notification(f"http://127.0.0.1:{free_port()}/"),
            notification(receiver.url, events=["promoted"]),
        ]
    )
    assert await notifiers.send(rolled_back_event()) == 2
    assert len(receiver.posts) == 2
    stats = notifiers.stats()
    assert (stats["sent"], stats["failed"], stats["skipped"]) == (2, 1, 1)
    assert stats["targets"][0] == {
        "target": f"http://127.0.0.1:{receiver.server.server_port}/…",
        "format": "generic",
        "sent": 1,
        "failed": 0,
        "skipped": 0,
    }


async def test_events_reach_each_webhook_one_at_a_time_in_the_order_they_happened(
    receiver: WebhookReceiver,
) -> None:
    """A slow webhook gets "started", "step", "promoted" in that order, never two at once."""
    receiver.stall_s = 0.2
    notifiers: Notifier = Notifiers([notification(receiver.url)])
    kinds = ["started", "step", "step", "promoted"]
    tasks = [
        task
        for kind in kinds
        for task in notifiers.send_in_background(build_event(kind, ROLLOUT, kind, now=NOW))  # type: ignore[arg-type]
    ]
    assert all(await asyncio.gather(*tasks))
    assert [post["event"] for post in receiver.posts] == kinds
    assert receiver.most_in_flight == 1


async def test_a_malformed_event_is_a_failure_not_an_exception(receiver: WebhookReceiver) -> None:
    """send never raises, even for an event missing the fields a payload needs."""
    notifier = WebhookNotifier(notification(receiver.url, format="slack"))
    assert await notifier.send({"event": "promoted"}) is False
    assert notifier.failed == 1

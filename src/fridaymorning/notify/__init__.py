"""The Notifier role: rollout events delivered to people.

`Notifier` is the protocol (base.py). `Notifiers` posts to the webhooks a service configures
(webhook.py): generic JSON or Slack-compatible.
"""

from fridaymorning.notify.base import Notifier
from fridaymorning.notify.webhook import Notifiers, WebhookNotifier

__all__ = ["Notifier", "Notifiers", "WebhookNotifier"]

"""Outbound webhooks: an agent's events posted, signed, to URLs the operator allows.

=================  ===========================================================
``service``        subscriptions, and the tasks that turn events into deliveries
                   and send them (:class:`Webhooks`)
``_hosts``         which URLs and addresses a webhook may reach
``_send``          one signed attempt (Standard Webhooks headers), backoff
=================  ===========================================================

The store side is :mod:`agentd.store.webhooks`; docs/webhooks.md is the user's guide.
"""

from agentd.webhooks.service import PING, WebhookIn, Webhooks, delivery_dict, webhook_dict

__all__ = ["PING", "WebhookIn", "Webhooks", "delivery_dict", "webhook_dict"]

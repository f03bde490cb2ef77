"""The Telegram channel: a bot per agent, reached through a webhook.

``POST /v1/channels/telegram/{agent}/webhook`` takes Telegram's updates (checked by
the ``X-Telegram-Bot-Api-Secret-Token`` header in constant time, recorded durably and
answered at once; a replayed ``update_id`` does nothing). A worker hands each chat's
messages, in order, to the session ``telegram:<chat_id>`` (photos and documents saved
under ``attachments/`` in the agent's workspace), and each bound chat's session is
followed from a durable cursor: answers, the agent's own posts and schedule output
are sent back with the Bot API. See docs/channels.md.
"""

from agentd.channels.telegram._botapi import BotAPIError, redact
from agentd.channels.telegram._inbound import SECRET_HEADER, session_key
from agentd.channels.telegram._service import TelegramChannel
from agentd.channels.telegram._text import MAX_MESSAGE, safe_file_name, split_message

__all__ = ["MAX_MESSAGE", "SECRET_HEADER", "BotAPIError", "TelegramChannel", "redact",
           "safe_file_name", "session_key", "split_message"]

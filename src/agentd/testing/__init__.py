"""Test doubles that ship with agentd: the scripted model's queue, a stub LLM server and a
clock the test moves.

``scripted_enqueue`` / ``scripted_clear`` drive the in-process ``scripted`` model;
:class:`StubLLMServer` speaks real provider wire formats over HTTP, with faults and an
optional :class:`Capacity` (concurrency, latency, RPM and TPM limits) it admits calls by,
and each provider's prompt cache (:class:`CacheStats`, :class:`CacheResult`);
:class:`StubBotAPI` is a Telegram Bot API with recorded calls and injected failures;
:class:`StubSearch` is SearXNG, Brave Search and Tavily, likewise;
:class:`FakeClock` is virtual time for :mod:`agentd.clock` (``Runtime.open(settings,
clock=FakeClock())``).
"""

from agentd.llm.scripted import clear_queue as scripted_clear
from agentd.llm.scripted import enqueue as scripted_enqueue
from agentd.testing.clock import FakeClock
from agentd.testing.stub_llm import CacheResult, CacheStats, Capacity, StubLLMServer, StubStats
from agentd.testing.stub_search import StubSearch
from agentd.testing.stub_telegram import BotCall, StubBotAPI

__all__ = ["BotCall", "CacheResult", "CacheStats", "Capacity", "FakeClock", "StubBotAPI",
           "StubLLMServer", "StubSearch", "StubStats", "scripted_clear", "scripted_enqueue"]

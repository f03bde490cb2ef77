"""Which URLs and addresses a webhook may reach (the operator's patterns), checked again
before every attempt: a name that now resolves elsewhere (DNS rebinding) is refused
and nothing is sent."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from tests.webhooks._receiver import Receiver

from agentd.config import WebhooksConfig
from agentd.security.hosts import HostRules, Refused, parse_pattern
from agentd.webhooks._send import attempt, backoff_s, retry_after_s


def _resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6,
                 "", (a, port)) for a in addresses]
    return resolve


def test_patterns() -> None:
    assert parse_pattern("Hooks.Example.com") == ("hooks.example.com", None)
    assert parse_pattern("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_pattern("[::1]:80") == ("::1", 80)
    assert parse_pattern("*.example.org") == ("*.example.org", None)
    for bad in ("", "a:b", "::1", "[::1", "a/b", "x:70000", "user@host"):
        with pytest.raises(ValueError):
            parse_pattern(bad)
    with pytest.raises(ValidationError, match="allow_hosts"):
        WebhooksConfig(allow_hosts=["ok.example", "bad/host"])


def test_urls() -> None:
    rules = HostRules.of(["hooks.example.com", "*.example.org", "127.0.0.1:9000"],
                         ["127.0.0.1"], [8721])
    target = rules.check_url("https://hooks.example.com/x?y=1")
    assert (target.host, target.port, target.named) == ("hooks.example.com", 443, True)
    assert rules.check_url("https://a.example.org/").named is False
    assert rules.check_url("http://127.0.0.1:9000/").port == 9000
    for url, words in [
        ("https://evil.example/", "not a host the operator allows"),
        ("https://127.0.0.1:9001/", "not a host the operator allows"),
        ("http://hooks.example.com/", "plain http"),
        ("https://u:p@hooks.example.com/", "user name"),
        ("https://hooks.example.com/#x", "fragment"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("file:///etc/passwd", "https://"),
        ("https://" + "a" * 3000, "longer than"),
    ]:
        with pytest.raises(Refused, match=words):
            rules.check_url(url)
    with pytest.raises(Refused, match="webhooks are off"):
        HostRules.of([], [], []).check_url("https://hooks.example.com/")


def test_addresses() -> None:
    rules = HostRules.of(["*", "named.internal", "127.0.0.1"], ["*"], [8721])
    wild = rules.check_url("https://a.example.org/")
    assert rules.address(wild, resolve=_resolver("93.184.216.34")) == "93.184.216.34"
    # A wildcard never reaches a private, loopback, link-local or mapped address, and
    # one bad address among good ones refuses the name.
    for bad in ("10.0.0.1", "127.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "::1",
                "fd00::1", "0.0.0.0"):
        with pytest.raises(Refused, match="not a public address"):
            rules.address(wild, resolve=_resolver("93.184.216.34", bad))
    # A host the operator names exactly may be private ...
    named = rules.check_url("https://named.internal/")
    assert rules.address(named, resolve=_resolver("10.0.0.7")) == "10.0.0.7"
    # ... but never the daemon's own port on this host.
    own = rules.check_url("http://127.0.0.1:8721/v1/agents")
    with pytest.raises(Refused, match="daemon's own port"):
        rules.address(own, resolve=_resolver("127.0.0.1"))


async def test_an_attempt_checks_the_address_again_and_sends_nothing_when_refused(
        ) -> None:
    receiver = Receiver()
    try:
        # The subscription was made when 127.0.0.1 was named; now only a wildcard is.
        rules = HostRules.of(["*"], ["*"], [])
        async with httpx.AsyncClient() as client:
            outcome = await attempt(client, rules, url=receiver.url, secret="whsec_AAAA",
                                    delivery="whd_1", body="{}", timeout_s=5)
        assert not outcome.delivered and outcome.status_code is None
        assert outcome.error is not None and outcome.error.startswith("refused:")
        assert receiver.received == []
        allowed = HostRules.of(["127.0.0.1"], ["127.0.0.1"], [])
        async with httpx.AsyncClient() as client:
            outcome = await attempt(client, allowed, url=receiver.url,
                                    secret="whsec_AAAA", delivery="whd_1", body="{}",
                                    timeout_s=5)
        assert outcome.delivered and outcome.status_code == 200
        [got] = receiver.received
        assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
        assert got.path == "/hook" and got.id == "whd_1"
    finally:
        receiver.close()


def test_backoff_and_retry_after() -> None:
    assert backoff_s(1, base_s=5, max_s=3600, rand=lambda: 0.0) == 2.5
    assert backoff_s(1, base_s=5, max_s=3600, rand=lambda: 1.0) == 5.0
    assert backoff_s(4, base_s=5, max_s=3600, rand=lambda: 1.0) == 40.0
    assert backoff_s(40, base_s=5, max_s=3600, rand=lambda: 1.0) == 3600.0
    assert retry_after_s("120", 0) == 120.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_s("soon", 0) is None and retry_after_s(None, 0) is None


async def test_a_receiver_that_never_answers_costs_one_timeout() -> None:
    """A hostile receiver holding the connection open: the attempt ends at timeout_s."""
    import asyncio

    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rules = HostRules.of(["127.0.0.1"], ["127.0.0.1"], [])
        async with httpx.AsyncClient() as client:
            outcome = await attempt(client, rules, url=f"http://127.0.0.1:{port}/",
                                    secret="whsec_AAAA", delivery="whd_1", body="{}",
                                    timeout_s=0.5)
        assert not outcome.delivered
        assert outcome.error is not None and (
            "no answer within 0.5s" in outcome.error or "Timeout" in outcome.error)
        assert held  # it did connect
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()

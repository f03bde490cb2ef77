"""Splitting long replies and making attachment names safe: properties over any text."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from agentd.channels.telegram import MAX_MESSAGE, safe_file_name, split_message
from agentd.channels.telegram._botapi import redact

_WORDS = st.lists(st.sampled_from(["word", "a", "longerword", "😀", "x" * 50, "\n", "\n\n",
                                   " ", "ünïcödé", "\t"]), max_size=400).map("".join)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@hyp_settings(max_examples=300, deadline=None)
@given(text=st.one_of(_WORDS, st.text(max_size=3000)),
       limit=st.integers(min_value=8, max_value=300))
def test_pieces_fit_and_lose_nothing_but_whitespace_at_the_cuts(text: str,
                                                                limit: int) -> None:
    pieces = split_message(text, limit)
    assert pieces
    assert all(_units(p) <= limit for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())
    if text.strip():
        assert all(p.strip() for p in pieces)


def test_a_reply_under_the_limit_is_one_message_and_a_long_one_cuts_at_paragraphs(
        ) -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("a" * MAX_MESSAGE) == ["a" * MAX_MESSAGE]
    text = "first paragraph " * 200 + "\n\n" + "second " * 400
    pieces = split_message(text)
    assert len(pieces) == 2
    assert pieces[0] == ("first paragraph " * 200).strip()
    # Emoji count two units each, as Telegram counts them.
    emoji = split_message("😀" * 3000)
    assert [_units(p) for p in emoji] == [4096, 1904]


@hyp_settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300),
                 st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "b.txt", "\x00",
                                           "~", "-", " "]), max_size=20).map("".join)))
def test_a_safe_name_is_one_plain_name(name: str | None) -> None:
    safe = safe_file_name(name, "document")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", safe), safe


def test_redact_takes_the_token_out_of_bot_api_paths() -> None:
    line = 'HTTP Request: POST https://api.telegram.org/bot123:AbC-d_e/sendMessage "200"'
    assert redact(line) == ('HTTP Request: POST https://api.telegram.org/bot<token>/'
                            'sendMessage "200"')
    assert redact("GET http://h/file/bot123:x/photos/a.jpg") == \
        "GET http://h/file/bot<token>/photos/a.jpg"
    assert redact("the token 123:secret leaked", "123:secret") == "the token <token> leaked"


def test_text_with_a_lone_surrogate_is_sent_with_a_replacement() -> None:
    from agentd.channels.telegram._outbound import texts_of
    from agentd.settings.channels import TelegramSettings
    from agentd.store.records import EventRecord

    event = EventRecord(session_id="s", seq=1, kind="message.proactive",
                        data={"content": "broken \ud800 text"}, at=0.0)
    conf = TelegramSettings(bot_token_env="TELEGRAM_A", secret_token_env="TELEGRAM_B")
    assert texts_of(event, conf) == ["broken ? text"]

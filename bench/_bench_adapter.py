"""The adapter `bench/turns.py --adapter` measures: a reply function answering as the
scripted model's echo does, so the difference is agentd's adapter layer."""

from __future__ import annotations

from agentd.adapters import Session


async def echo(message: str, session: Session) -> str:
    return f"echo: {message}"

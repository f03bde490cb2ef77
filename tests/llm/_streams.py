"""What a provider's failed stream may leave behind."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

#: Packages whose stream generators a provider drives (the SDKs, their HTTP clients,
#: the providers' wire).
_SDK_PATHS = ("/openai/", "/anthropic/", "/httpx2/", "/httpx/", "/httpcore", "/aiohttp/",
              "/agentd/llm/providers/")


def suspended_sdk_generators() -> list[str]:
    """Async generators of the SDKs still suspended (started, not finished): kept alive
    by a reference cycle, they are finalized only when the cyclic collector runs,
    on whatever event loop is current then, or none (an unraisable exception)."""
    return [f"{g.ag_code.co_filename}:{g.ag_code.co_name}" for g in gc.get_objects()
            if type(g).__name__ == "async_generator" and g.ag_frame is not None
            and any(part in g.ag_code.co_filename for part in _SDK_PATHS)]


async def assert_broken_streams_released(stub: Any, model: Any, request: Any) -> None:
    """The SDK leaves its stream's generators suspended when a chunk fails to parse or
    the connection drops; they must go with the failed call (reference counting), not
    wait for the cyclic collector to finalize them on some later event loop."""
    from agentd.errors import ModelError

    gc.collect()
    gc.disable()
    try:
        for fault in ("malformed_json", "reset_mid_stream"):
            stub.enqueue(text="one two three four five six seven eight", fault=fault)
            try:
                await model.complete(request)
            except ModelError:
                pass
            else:
                raise AssertionError(f"a {fault} stream did not fail")
        for _ in range(5):  # the finalizers' aclose() tasks run on this loop
            await asyncio.sleep(0.01)
        left = suspended_sdk_generators()
    finally:
        gc.enable()
    assert left == []

"""Schemathesis hooks for agentd's API: how to send the bodies JSON cannot carry.

``POST /v1/agents/{name}/memory/import`` takes JSON lines (application/x-ndjson);
schemathesis generates a string for it, sent as its UTF-8 bytes. Loaded by
tests/server/test_fuzz.py (import) and by bench/fuzz.py (``SCHEMATHESIS_HOOKS``).
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")

"""An agent's memory: core blocks (list, read, write, delete, history, restore, share)
and long-term entries (write, list, read, change, forget, search, consolidate, export,
import)."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Self

import httpx

from agentd.client._errors import APIError, ClientError
from agentd.client.base import BaseClient, segment

__all__ = ["MemoryAPI", "MemoryExport", "open_lines"]


class MemoryAPI(BaseClient):
    """Core memory blocks (``/v1/agents/{name}/memory/blocks``) and long-term memory
    entries (``/v1/agents/{name}/memory/entries``, ``/search``, ...)."""

    def _block_path(self, agent: str, label: str | None = None) -> str:
        path = f"/v1/agents/{segment(agent)}/memory/blocks"
        return path if label is None else f"{path}/{segment(label)}"

    def list_blocks(self, agent: str) -> list[dict[str, Any]]:
        """The agent's blocks in the order the model sees them: ``label``,
        ``description``, ``value``, ``chars``, ``limit``, ``read_only``, ``version``,
        ``created_at``, ``updated_at``."""
        result = self._request("GET", self._block_path(agent))
        blocks: list[dict[str, Any]] = result.get("blocks", []) if result else []
        return blocks

    def get_block(self, agent: str, label: str) -> dict[str, Any]:
        """One block (``block_not_found`` when the agent has none by that label)."""
        result: dict[str, Any] = self._request("GET", self._block_path(agent, label))
        return result

    def put_block(
        self,
        agent: str,
        label: str,
        value: str,
        *,
        description: str | None = None,
        limit: int | None = None,
        read_only: bool | None = None,
    ) -> dict[str, Any]:
        """Create the block, or give it a new value (a new version). Fields left
        ``None`` are kept (for a new block: empty description, limit 5000, writable).

        Raises:
            APIError: ``invalid_input`` (422, e.g. a value over the limit).
        """
        body: dict[str, Any] = {"value": value}
        for key, field in (("description", description), ("limit", limit),
                           ("read_only", read_only)):
            if field is not None:
                body[key] = field
        result: dict[str, Any] = self._request("PUT", self._block_path(agent, label),
                                               json_body=body)
        return result

    def patch_block(self, agent: str, label: str, **fields: Any) -> dict[str, Any]:
        """Change some of ``value``, ``description``, ``limit``, ``read_only`` (a new
        version)."""
        result: dict[str, Any] = self._request("PATCH", self._block_path(agent, label),
                                               json_body=fields)
        return result

    def delete_block(self, agent: str, label: str) -> None:
        """Remove the block from the agent (gone with its history once no agent has
        it)."""
        self._request("DELETE", self._block_path(agent, label))

    def block_history(self, agent: str, label: str) -> list[dict[str, Any]]:
        """Every version, oldest first: ``version``, ``value``, ``description``,
        ``limit``, ``read_only``, ``changed_by``, ``run_id``, ``at``."""
        result = self._request("GET", f"{self._block_path(agent, label)}/history")
        versions: list[dict[str, Any]] = result.get("versions", []) if result else []
        return versions

    def restore_block(self, agent: str, label: str, version: int) -> dict[str, Any]:
        """Make an old version current again, as a new version; the block."""
        result: dict[str, Any] = self._request(
            "POST", f"{self._block_path(agent, label)}/restore",
            json_body={"version": version})
        return result

    def attach_block(self, agent: str, label: str, other_agent: str) -> dict[str, Any]:
        """Share the block with ``other_agent`` (same label): both see and change the
        same block."""
        result: dict[str, Any] = self._request(
            "POST", f"{self._block_path(agent, label)}/attach",
            json_body={"agent": other_agent})
        return result

    # -- long-term memory entries ------------------------------------------------------

    def _entries_path(self, agent: str, rest: str = "entries") -> str:
        return f"/v1/agents/{segment(agent)}/memory/{rest}"

    def add_entry(
        self,
        agent: str,
        content: str,
        *,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        namespace: str | None = None,
        tainted: bool = False,
    ) -> dict[str, Any]:
        """Store one long-term memory entry, verbatim (no model call).

        Args:
            agent: The agent's name.
            content: The text (1 to the daemon's ``memory.max_entry_chars``).
            tags: Up to 32 tags of 1 to 64 characters.
            metadata: Any JSON object (16 KB at most).
            namespace: A shared namespace in the agent's ``settings.memory.namespaces``;
                ``None``: the agent's own memory.
            tainted: Mark the entry untrusted (text from outside): a run that recalls it
                is tainted.

        Returns:
            The Entry with ``created``: ``False`` when an entry with the same normalised
            content was there already (that entry is returned; nothing was written).

        Raises:
            APIError: ``agent_not_found`` (404), ``namespace_not_allowed`` (403),
                ``invalid_input`` (422: empty or oversized content, a bad tag).
        """
        result: dict[str, Any] = self._request(
            "POST", self._entries_path(agent),
            json_body=_entry_body(content, tags, metadata, namespace, tainted))
        return result

    def add_entries(self, agent: str, entries: Sequence[Mapping[str, Any]]
                    ) -> dict[str, Any]:
        """Store up to 1,000 entries in one transaction: all of them, or none when one
        is refused (the 422 names it, e.g. ``body.entries.3.content``).

        Args:
            agent: The agent's name.
            entries: Dicts with ``content`` and optionally ``tags``, ``metadata``,
                ``namespace``, ``tainted`` (as :meth:`add_entry` takes them).

        Returns:
            ``{"entries": [Entry + created], "created": N}``, in the order given.
        """
        result: dict[str, Any] = self._request(
            "POST", self._entries_path(agent), json_body={"entries": list(entries)})
        return result

    def list_entries(
        self,
        agent: str,
        *,
        namespace: str | None = None,
        tags: Sequence[str] | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> dict[str, Any]:
        """One page of entries, newest first (the agent's own and its shared
        namespaces', or only ``namespace``'s).

        Args:
            agent: The agent's name.
            namespace: Only this shared namespace.
            tags: Only entries having every one of these tags.
            limit: At most this many (1-1000).
            before: The ``next_before`` of the page before, for the next page.

        Returns:
            ``{"entries": [Entry], "next_before": str | None}``.
        """
        params: dict[str, Any] = {"namespace": namespace, "limit": limit, "before": before}
        if tags:
            params["tag"] = list(tags)
        result: dict[str, Any] = self._request("GET", self._entries_path(agent),
                                               params=params)
        return result

    def iter_entries(self, agent: str, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every entry matching the filters of :meth:`list_entries`, newest first,
        page by page (``limit`` sets the page size)."""
        before: str | None = None
        while True:
            page = self.list_entries(agent, **filters, before=before)
            yield from page.get("entries", [])
            before = page.get("next_before")
            if not before:
                return

    def get_entry(self, agent: str, entry_id: str) -> dict[str, Any]:
        """One entry (``entry_not_found`` when none of the agent's namespaces has it)."""
        result: dict[str, Any] = self._request(
            "GET", self._entries_path(agent, f"entries/{segment(entry_id)}"))
        return result

    def update_entry(
        self,
        agent: str,
        entry_id: str,
        *,
        content: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tainted: bool | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """Change the fields given (a new version); ``None`` keeps a field.

        Args:
            tainted: ``True`` marks the entry untrusted, ``False`` clears the mark (you
                vouch for the content).
            version: Refuse unless the entry is still at this version.

        Raises:
            APIError: ``entry_not_found`` (404), ``entry_changed`` (409: not at
                ``version`` any more), ``entry_duplicate`` (409: another entry has that
                content, ``details["existing"]``), ``invalid_input`` (422).
        """
        body = {key: value for key, value in (
            ("content", content), ("tags", None if tags is None else list(tags)),
            ("metadata", None if metadata is None else dict(metadata)),
            ("tainted", tainted), ("version", version)) if value is not None}
        result: dict[str, Any] = self._request(
            "PATCH", self._entries_path(agent, f"entries/{segment(entry_id)}"),
            json_body=body)
        return result

    def delete_entry(self, agent: str, entry_id: str) -> None:
        """Forget an entry."""
        self._request("DELETE", self._entries_path(agent, f"entries/{segment(entry_id)}"))

    def search_memory(
        self,
        agent: str,
        query: str,
        *,
        limit: int = 10,
        tags: Sequence[str] | None = None,
        tags_any: Sequence[str] | None = None,
        metadata: Mapping[str, str | int | float | bool | None] | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        updated_after: datetime | str | None = None,
        namespaces: Sequence[str | None] | None = None,
        vector_weight: float | None = None,
    ) -> list[dict[str, Any]]:
        """Hybrid search of the agent's long-term memory: full text and vectors fused.

        Args:
            agent: The agent's name.
            query: What to look for (every word is a word; none is query syntax).
            limit: At most this many results (1-100).
            tags: Entries having every one of these tags.
            tags_any: Entries having at least one of these.
            metadata: Equality on metadata keys (scalar values).
            created_after, created_before, updated_after: Bounds (a datetime, or RFC
                3339 text; a naive datetime is sent as it is, which the daemon reads as
                UTC).
            namespaces: The namespaces to search (``None`` or ``""`` in the list: the
                agent's own); default: its own and every shared one in its settings.
            vector_weight: 0 (full text only) to 1 (vectors only); default: the agent's
                ``settings.memory.vector_weight``.

        Returns:
            The results, best first: each an Entry with ``score`` (0 to 1) and
            ``scores`` (``{"text", "vector"}``).
        """
        body: dict[str, Any] = {"query": query, "limit": limit}
        for key, seq in (("tags", tags), ("tags_any", tags_any)):
            if seq:
                body[key] = list(seq)
        if metadata:
            body["metadata"] = dict(metadata)
        for key, moment in (("created_after", created_after),
                            ("created_before", created_before),
                            ("updated_after", updated_after)):
            if moment is not None:
                body[key] = moment.isoformat() if isinstance(moment, datetime) else moment
        if namespaces is not None:
            body["namespaces"] = [name or "" for name in namespaces]
        if vector_weight is not None:
            body["vector_weight"] = vector_weight
        result = self._request("POST", self._entries_path(agent, "search"), json_body=body)
        results: list[dict[str, Any]] = result.get("results", []) if result else []
        return results

    def consolidate_memory(self, agent: str, session: str | None = None,
                           *, timeout: float | None = 300.0) -> list[dict[str, Any]]:
        """Turn the history not consolidated yet (of every session, or of ``session``)
        into entries and block lines now, with the agent's consolidation model.

        Args:
            timeout: Seconds to wait: a model writes the memories.

        Returns:
            One record per session consolidated (``session``, ``seq``, ``from_seq``,
            ``to_seq``, ``model``, ``usage``, ``entries``, ``duplicates``, ``blocks``,
            ``skipped``); empty when nothing new happened (no model call then).

        Raises:
            APIError: ``agent_not_found`` (404), a conflict (409), the model failing
                (502) or unavailable (503).
        """
        result = self._request("POST", self._entries_path(agent, "consolidate"),
                               json_body={} if session is None else {"session": session},
                               timeout=timeout)
        done: list[dict[str, Any]] = result.get("consolidations", []) if result else []
        return done

    def export_memory(self, agent: str) -> MemoryExport:
        """The agent's memory blocks and entries as JSON lines, streamed.

        The request is made now (so an unknown agent raises here); the lines arrive as
        the result is iterated. Iterate it to the end, or close it (it is a context
        manager), to free the connection::

            with client.export_memory("demo") as lines, open("demo.jsonl", "wb") as f:
                f.writelines(lines)

        Returns:
            An iterator of lines, each ``bytes`` ending in ``b"\\n"``: a header
            (``{"type": "agentd.memory", "version": 1, ...}``), then ``block`` and
            ``entry`` lines.
        """
        return open_lines(self, self._entries_path(agent, "export"))

    def import_memory(self, agent: str, data: bytes | str | os.PathLike[str] | IO[bytes]
                      ) -> dict[str, Any]:
        """Write the blocks and entries of an export (:meth:`export_memory`).

        Every line is checked before anything is written; entries whose content the
        agent has are skipped and counted, so an import can be repeated.

        Args:
            agent: The agent's name.
            data: The JSON lines: ``bytes``, ``str`` (the text itself, not a file
                name), a path (``pathlib.Path``), or a binary file object.

        Returns:
            ``{"blocks": N, "entries": N, "duplicates": N}``.

        Raises:
            APIError: ``invalid_input`` (422) naming the bad line and field
                (``body.line[7].content``), 413 for an export over the daemon's
                ``max_body_bytes``.
            OSError: ``data`` is a path that cannot be read.
        """
        if isinstance(data, str):
            body = data.encode()
        elif isinstance(data, bytes):
            body = data
        elif isinstance(data, os.PathLike):
            body = Path(data).read_bytes()
        else:
            body = data.read()
        # Not _request: that sends JSON, and this body is JSON lines.
        try:
            response = self._http.post(self._entries_path(agent, "import"), content=body,
                                       headers={"Content-Type": "application/x-ndjson"})
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.is_error:
            raise APIError.from_response(response)
        try:
            result: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ClientError(f"the daemon at {self.base_url} sent a reply that is not "
                              f"JSON (HTTP {response.status_code} POST import)") from exc
        return result


def _entry_body(content: str, tags: Sequence[str] | None, metadata: Mapping[str, Any] | None,
                namespace: str | None, tainted: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"content": content}
    if tags:
        body["tags"] = list(tags)
    if metadata:
        body["metadata"] = dict(metadata)
    if namespace is not None:
        body["namespace"] = namespace
    if tainted:
        body["tainted"] = True
    return body


def open_lines(client: BaseClient, path: str, params: Mapping[str, Any] | None = None,
               timeout: httpx.Timeout | None = None) -> MemoryExport:
    """A ``GET`` of JSON lines (``application/x-ndjson``), its answer checked now (an
    error raises here) and its lines read as they are iterated."""
    request = client._http.build_request(
        "GET", path, params={k: v for k, v in (params or {}).items() if v is not None},
        headers={"Accept": "application/x-ndjson"},
        timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
    try:
        response = client._http.send(request, stream=True)
    except httpx.TransportError as exc:
        raise client._transport_error(exc) from exc
    if response.is_error:
        try:
            response.read()
        finally:
            response.close()
        raise APIError.from_response(response)
    return MemoryExport(response, client._transport_error)


class MemoryExport:
    """The lines of :meth:`MemoryAPI.export_memory` as they arrive: an iterator of
    ``bytes`` lines, and a context manager that closes the response."""

    def __init__(self, response: httpx.Response,
                 transport_error: Callable[[httpx.TransportError], ClientError]) -> None:
        self._response = response
        self._lines = self._read(transport_error)

    def _read(self, transport_error: Callable[[httpx.TransportError], ClientError]
              ) -> Generator[bytes, None, None]:
        # Split here rather than with iter_lines: the lines stay the bytes the daemon
        # sent (iter_lines decodes, and splits on \r and U+2028 too).
        pending = b""
        try:
            for chunk in self._response.iter_bytes():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line + b"\n"
            if pending:
                yield pending
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc
        finally:
            self._response.close()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._lines)

    def close(self) -> None:
        """Stop reading and free the connection."""
        self._response.close()
        self._lines.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

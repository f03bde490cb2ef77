"""An agent's core memory blocks: list, read, write, delete, history, restore, share."""

from __future__ import annotations

from typing import Any

from agentd.client._base import BaseClient, segment

__all__ = ["MemoryAPI"]


class MemoryAPI(BaseClient):
    """Core memory blocks (``/v1/agents/{name}/memory/blocks``)."""

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

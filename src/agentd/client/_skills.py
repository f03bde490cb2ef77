"""Skills: the daemon's registry (install, list, show, remove) and an agent's enabled
skills (enable, disable)."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import httpx

from agentd.client._errors import APIError, ClientError
from agentd.client.base import BaseClient, segment

__all__ = ["SkillsAPI", "zip_folder"]


def zip_folder(folder: Path) -> bytes:
    """A skill's folder as a zip archive in memory, the folder itself at its top
    (links and special files are refused: the daemon would refuse them too)."""
    folder = folder.resolve()
    if not (folder / "SKILL.md").is_file():
        raise ClientError(f"{folder} has no SKILL.md: it is not a skill's folder")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for here, dirs, files in os.walk(folder):
            dirs.sort()
            for name in [*dirs, *sorted(files)]:
                path = Path(here, name)
                mode = path.lstat().st_mode
                rel = f"{folder.name}/{path.relative_to(folder).as_posix()}"
                if stat.S_ISDIR(mode):
                    archive.writestr(zipfile.ZipInfo(rel + "/"), b"")
                elif stat.S_ISREG(mode):
                    archive.write(path, rel)
                else:
                    raise ClientError(f"{path} is a link or a special file: a skill holds "
                                      "regular files and folders only")
    return buffer.getvalue()


class SkillsAPI(BaseClient):
    """``/v1/skills`` and ``/v1/agents/{name}/skills/{skill}``."""

    def list_skills(self) -> list[dict[str, Any]]:
        """The installed skills: ``name``, ``description``, ``license``,
        ``compatibility``, ``metadata``, ``allowed_tools``, ``size``, ``files``,
        ``installed_at``, ``hash``."""
        result = self._request("GET", "/v1/skills")
        skills: list[dict[str, Any]] = result.get("skills", []) if result else []
        return skills

    def get_skill(self, name: str) -> dict[str, Any]:
        """One skill, with ``body``: its instructions (``skill_not_found``, 404)."""
        result: dict[str, Any] = self._request("GET", f"/v1/skills/{segment(name)}")
        return result

    def install_skill(self, source: str | os.PathLike[str] | bytes, *,
                      replace: bool = False, on_host: bool = False) -> dict[str, Any]:
        """Install a skill.

        Args:
            source: A skill's folder (zipped here and uploaded), a ``.zip`` or
                ``.tar.gz`` file, or an archive's bytes. With ``on_host``, the path of
                a folder on the daemon's host, which copies it (admin tokens only).
            replace: Replace an installed skill of the same name (atomically).
            on_host: See ``source``.

        Returns:
            The installed skill (as :meth:`list_skills` shows each).

        Raises:
            APIError: ``invalid_skill`` (422, naming the field: ``SKILL.md.name``,
                ``archive``, ...), ``skill_exists`` (409), ``payload_too_large`` (413),
                ``forbidden`` (403: ``on_host`` without an admin token).
        """
        if on_host:
            if isinstance(source, bytes):
                raise ClientError("on_host takes a path on the daemon's host")
            result: dict[str, Any] = self._request(
                "POST", "/v1/skills", json_body={"path": os.fspath(source),
                                                 "replace": replace})
            return result
        if isinstance(source, bytes):
            body, kind = source, "application/octet-stream"
        else:
            path = Path(source)
            if path.is_dir():
                body, kind = zip_folder(path), "application/zip"
            else:
                body = path.read_bytes()
                kind = "application/zip" if path.suffix == ".zip" else "application/gzip"
        try:
            response = self._http.post("/v1/skills", content=body,
                                       params={"replace": "true"} if replace else None,
                                       headers={"Content-Type": kind})
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.is_error:
            raise APIError.from_response(response)
        installed: dict[str, Any] = response.json()
        return installed

    def remove_skill(self, name: str) -> None:
        """Uninstall a skill (``skill_not_found``, 404)."""
        self._request("DELETE", f"/v1/skills/{segment(name)}")

    def enable_skill(self, agent: str, skill: str) -> dict[str, Any]:
        """Enable an installed skill for an agent; the agent."""
        result: dict[str, Any] = self._request(
            "PUT", f"/v1/agents/{segment(agent)}/skills/{segment(skill)}")
        return result

    def disable_skill(self, agent: str, skill: str) -> dict[str, Any]:
        """Disable a skill for an agent; the agent."""
        result: dict[str, Any] = self._request(
            "DELETE", f"/v1/agents/{segment(agent)}/skills/{segment(skill)}")
        return result

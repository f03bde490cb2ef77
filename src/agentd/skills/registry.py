"""The daemon's skill registry: packages installed under ``<home>/skills``.

Layout::

    <home>/skills/
      <name>                  a symbolic link to the installed version (relative)
      .store/<name>.<stamp>/  the package's files (dirs 0755, files 0644 or 0755)
      .store/<name>.<stamp>.json   its manifest: what listing shows
      .staging/<random>/      packages being extracted and checked

An install extracts (or copies) into ``.staging`` with every check made while the
bytes are read (member paths, file kinds, counts and uncompressed sizes: a zip bomb
is stopped at the limit, whatever its headers claim), validates ``SKILL.md``, moves
the folder into ``.store`` (same filesystem: a rename), then publishes it by creating
the link, or with ``replace`` by renaming a new link over the old one. Each of those
last steps is atomic, so a reader sees the old skill or the new one, never a part;
a crash leaves only unlinked versions and staging folders, removed at the next
start. All file work runs in a thread (:func:`asyncio.to_thread`).

The registry is this node's: with PostgreSQL and several nodes, install a skill on
each (the names agents enable are checked against the node that saves them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import stat
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agentd.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from agentd.skills._package import (
    LIMITS,
    SKILL_FILE,
    Limits,
    SkillMeta,
    check_name,
    invalid,
    parse_skill_md,
)
from agentd.store.records import iso

__all__ = ["SkillInfo", "SkillRegistry", "member_parts"]

log = logging.getLogger(__name__)

_STORE, _STAGING = ".store", ".staging"
_CHUNK = 1 << 16
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, kw_only=True, slots=True)
class SkillInfo:
    """An installed skill, as listing shows it (no body: see :meth:`SkillRegistry.load`)."""

    name: str
    description: str
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    allowed_tools: tuple[str, ...] = ()
    size: int = 0
    files: tuple[str, ...] = ()
    installed_at: float = 0.0
    hash: str = ""
    version: str = ""

    def to_api(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "license": self.license, "compatibility": self.compatibility,
                "metadata": dict(self.metadata), "allowed_tools": list(self.allowed_tools),
                "size": self.size, "files": list(self.files),
                "installed_at": iso(self.installed_at), "hash": self.hash}

    def manifest(self) -> dict[str, Any]:
        return {**self.to_api(), "installed_at": self.installed_at,
                "version": self.version}

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> SkillInfo:
        return cls(name=data["name"], description=data["description"],
                   license=data.get("license"), compatibility=data.get("compatibility"),
                   metadata=dict(data.get("metadata") or {}),
                   allowed_tools=tuple(data.get("allowed_tools") or ()),
                   size=int(data["size"]), files=tuple(data["files"]),
                   installed_at=float(data["installed_at"]), hash=data["hash"],
                   version=data["version"])


def member_parts(raw: str, limits: Limits = LIMITS, where: str = "archive"
                 ) -> tuple[str, ...]:
    """The components of a relative path inside a package, refusing absolute paths,
    ``..``, backslashes, control characters and paths too deep or long."""
    if not raw or len(raw) > limits.max_path_chars:
        raise invalid(f"path {raw[:80]!r} is empty or longer than "
                      f"{limits.max_path_chars} characters", where)
    if any(ord(c) < 32 or c == "\x7f" for c in raw) or "\\" in raw:
        raise invalid(f"path {raw[:80]!r} holds a backslash or a control character",
                      where)
    if raw.startswith("/"):
        raise invalid(f"absolute path {raw[:80]!r} refused", where)
    parts = tuple(p for p in raw.split("/") if p not in ("", "."))
    if ".." in parts:
        raise invalid(f"path {raw[:80]!r} leaves its folder ('..')", where)
    if not parts or len(parts) > limits.max_depth:
        raise invalid(f"path {raw[:80]!r} is empty or deeper than {limits.max_depth}",
                      where)
    return parts


class _Sink:
    """Writes a package's members under ``root``, counting what it writes."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.files = 0
        self.total = 0

    def _count(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise invalid(f"the package has more than {self.limits.max_files} files "
                          "and folders", "archive")

    def dir(self, parts: tuple[str, ...]) -> None:
        self._count()
        self.root.joinpath(*parts).mkdir(mode=0o755, parents=True, exist_ok=True)

    def file(self, parts: tuple[str, ...], chunks: Iterable[bytes], *,
             executable: bool) -> None:
        self._count()
        path = self.root.joinpath(*parts)
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW,
                         0o755 if executable else 0o644)
        except FileExistsError:
            raise invalid(f"{'/'.join(parts)[:80]!r} is listed twice", "archive") from None
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                self.total += len(chunk)
                if size > self.limits.max_file_bytes:
                    raise PayloadTooLarge(
                        f"{'/'.join(parts)[:80]!r} is larger than "
                        f"{self.limits.max_file_bytes} bytes uncompressed",
                        details={"field": "archive"})
                if self.total > self.limits.max_total_bytes:
                    raise PayloadTooLarge(
                        f"the package is larger than {self.limits.max_total_bytes} bytes "
                        "uncompressed", details={"field": "archive"})
                out.write(chunk)


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


class _Capped(io.RawIOBase):
    """A stream that refuses to give more than ``cap`` bytes, whatever a header
    claims (tarfile reads a pax or GNU long-name header whole)."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self.inner, self.left = inner, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), _CHUNK)
        data = self.inner.read(want)
        self.left -= len(data)
        if self.left < 0:
            raise PayloadTooLarge("the archive is larger than the package limit "
                                  "uncompressed", details={"field": "archive"})
        buffer[:len(data)] = data
        return len(data)


def _skipped(parts: tuple[str, ...]) -> bool:
    """Archivers' litter: macOS resource forks."""
    return parts[0] == "__MACOSX" or parts[-1].startswith("._")


def _extract_zip(data: bytes, sink: _Sink) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise invalid("the body is not a valid zip archive", "archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > sink.limits.max_files:
            raise invalid(f"the archive has more than {sink.limits.max_files} members",
                          "archive")
        for info in infos:
            parts = member_parts(info.filename, sink.limits)
            if _skipped(parts):
                continue
            if info.flag_bits & 0x1:
                raise invalid(f"{info.filename[:80]!r} is encrypted", "archive")
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                sink.dir(parts)
            elif kind not in (0, stat.S_IFREG):
                raise invalid(f"{info.filename[:80]!r} is not a regular file (links and "
                              "special files are refused)", "archive")
            else:
                try:
                    with archive.open(info) as member:
                        sink.file(parts, _chunks(member),
                                  executable=bool((info.external_attr >> 16) & 0o111))
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
                        NotImplementedError, OSError, ValueError) as exc:
                    raise invalid(f"{info.filename[:80]!r} cannot be read: {exc}",
                                  "archive") from None


def _extract_tar(data: bytes, sink: _Sink, *, compressed: bool) -> None:
    limits = sink.limits
    # Headers included: the members' bytes, a header block or two each, and slack.
    cap = limits.max_total_bytes + (limits.max_files + 8) * 8192
    raw: Any = io.BytesIO(data)
    if compressed:
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    stream = io.BufferedReader(_Capped(raw, cap), _CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            count = 0
            for member in archive:
                count += 1
                if count > limits.max_files:
                    raise invalid(f"the archive has more than {limits.max_files} members",
                                  "archive")
                parts = member_parts(member.name, limits)
                if _skipped(parts):
                    continue
                if member.isdir():
                    sink.dir(parts)
                elif member.isreg():
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    sink.file(parts, _chunks(extracted),
                              executable=bool(member.mode & 0o111))
                else:
                    raise invalid(f"{member.name[:80]!r} is not a regular file (links, "
                                  "devices and fifos are refused)", "archive")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise invalid(f"the body is not a valid tar archive: {exc}", "archive") from None


def _copy_folder(source: Path, sink: _Sink) -> None:
    """Copy a folder on this host into the sink, refusing links and special files."""
    try:
        top = os.lstat(source)
    except OSError as exc:
        raise invalid(f"{source} cannot be read: {exc.strerror}", "body.path") from None
    if not stat.S_ISDIR(top.st_mode):
        raise invalid(f"{source} is not a folder", "body.path")
    base = (source.name,)
    sink.dir(base)
    for here, dirs, files in os.walk(source, followlinks=False, onerror=_raise):
        rel = Path(here).relative_to(source).parts
        for name in sorted(dirs) + sorted(files):
            path = Path(here, name)
            parts = member_parts("/".join((*rel, name)), sink.limits, "body.path")
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                sink.dir(base + parts)
            elif stat.S_ISREG(mode):
                fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
                with os.fdopen(fd, "rb") as f:
                    sink.file(base + parts, _chunks(f), executable=bool(mode & 0o111))
            else:
                raise invalid(f"{'/'.join(parts)[:80]!r} is a link or a special file: "
                              "a skill holds regular files and folders only", "body.path")


def _raise(exc: OSError) -> None:
    raise invalid(f"{exc.filename} cannot be read: {exc.strerror}", "body.path")


def _root(raw: Path) -> tuple[Path, str | None]:
    """The package's folder in an extraction: SKILL.md at the top, or the one folder
    at the top holding it (its name must be the skill's)."""
    if (raw / SKILL_FILE).is_file():
        return raw, None
    entries = list(raw.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / SKILL_FILE).is_file():
        return entries[0], entries[0].name
    raise invalid("no SKILL.md at the package's top, nor in its one top-level folder",
                  "SKILL.md")


def _survey(folder: Path) -> tuple[int, tuple[str, ...], str]:
    """Size, files (relative, sorted) and content hash of a folder."""
    files: list[tuple[str, str, int]] = []
    for here, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(here, name)
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in _chunks(f):
                    digest.update(chunk)
            files.append((path.relative_to(folder).as_posix(), digest.hexdigest(),
                          path.stat().st_size))
    files.sort()
    whole = hashlib.sha256()
    for rel, digest_hex, _ in files:
        whole.update(f"{rel}\0{digest_hex}\n".encode())
    return (sum(size for *_, size in files), tuple(rel for rel, _, _ in files),
            f"sha256:{whole.hexdigest()}")


class SkillRegistry:
    """The skills installed on this node, under ``root`` (``<home>/skills``)."""

    def __init__(self, root: Path, limits: Limits = LIMITS) -> None:
        self.root = root
        self.limits = limits
        self._lock = threading.Lock()  # publishing, removing, collecting
        self._skills: dict[str, SkillInfo] = {}

    # -- reading (from memory: no file work on the event loop) --------------------------

    def names(self) -> frozenset[str]:
        return frozenset(self._skills)

    def list(self) -> list[SkillInfo]:
        return [self._skills[name] for name in sorted(self._skills)]

    def get(self, name: str) -> SkillInfo:
        found = self._skills.get(name)
        if found is None:
            raise NotFound(f"no skill named {name[:80]!r} is installed",
                           code="skill_not_found")
        return found

    def folder(self, name: str) -> Path:
        """Where the skill's files are (its version folder: stable while installed)."""
        return self.root / _STORE / self.get(name).version

    # -- start ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the registry, drop what a crash left half-done, load the manifests."""
        self._skills = await asyncio.to_thread(self._start)
        if self._skills:
            log.info("skills: %d installed (%s)", len(self._skills),
                     ", ".join(sorted(self._skills)))

    def _start(self) -> dict[str, SkillInfo]:
        (self.root / _STORE).mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.rmtree(self.root / _STAGING, ignore_errors=True)
        with self._lock:
            self._collect()
            return self._scan()

    def _scan(self) -> dict[str, SkillInfo]:
        found: dict[str, SkillInfo] = {}
        for link in self.root.iterdir():
            if link.name.startswith(".") or not link.is_symlink():
                continue
            version = os.readlink(link).rpartition("/")[2]
            try:
                manifest = json.loads((self.root / _STORE / f"{version}.json").read_text())
                info = SkillInfo.from_manifest(manifest)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skill %r: its manifest cannot be read (%s); skipped",
                            link.name, exc)
                continue
            found[info.name] = info
        return found

    def _collect(self) -> None:
        """Remove versions no link points to (replaced or removed, or a crash's)."""
        store = self.root / _STORE
        live = {os.readlink(p).rpartition("/")[2] for p in self.root.iterdir()
                if p.is_symlink()}
        for entry in store.iterdir():
            version = entry.name.removesuffix(".json")
            if version in live:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()

    # -- installing ------------------------------------------------------------------

    async def install_archive(self, data: bytes, *, replace: bool = False) -> SkillInfo:
        """Install a zip or tar(.gz) archive holding one skill (``SKILL.md`` at its top
        or in its one top-level folder)."""
        if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            kind = "zip"
        elif data[:2] == b"\x1f\x8b":
            kind = "tar.gz"
        elif data[257:262] == b"ustar":
            kind = "tar"
        else:
            raise invalid("the body is not a zip or tar.gz archive", "archive")

        def extract(sink: _Sink) -> None:
            if kind == "zip":
                _extract_zip(data, sink)
            else:
                _extract_tar(data, sink, compressed=kind == "tar.gz")

        return await self._install(extract, replace=replace)

    async def install_folder(self, source: Path, *, replace: bool = False) -> SkillInfo:
        """Install a copy of a folder on the daemon's host (its name is the skill's)."""
        if not source.is_absolute():
            raise invalid(f"{str(source)[:200]!r} is not an absolute path", "body.path")
        return await self._install(lambda sink: _copy_folder(source, sink),
                                   replace=replace)

    async def _install(self, fill: Any, *, replace: bool) -> SkillInfo:
        info = await asyncio.to_thread(self._install_sync, fill, replace)
        self._skills[info.name] = info
        log.info("skill %r installed (%d files, %d bytes, %s)", info.name,
                 len(info.files), info.size, info.hash[:19])
        return info

    def _install_sync(self, fill: Any, replace: bool) -> SkillInfo:
        staging = self.root / _STAGING / secrets.token_hex(8)
        staging.mkdir(parents=True, mode=0o700)
        try:
            raw = staging / "raw"
            raw.mkdir(mode=0o755)
            try:
                fill(_Sink(raw, self.limits))
            except OSError as exc:  # a path that is a file and a folder, say
                raise invalid(f"the package cannot be written out: {exc.strerror} "
                              f"({Path(exc.filename or '').name[:80]!r})",
                              "archive") from None
            folder, named = _root(raw)
            meta = parse_skill_md(_read_capped(folder / SKILL_FILE,
                                               self.limits.max_skill_md_bytes + 1), named)
            if not replace and meta.name in self._skills:
                raise _exists(meta.name)
            size, files, digest = _survey(folder)
            version = f"{meta.name}.{time.time_ns():x}{secrets.token_hex(3)}"
            info = SkillInfo(name=meta.name, description=meta.description,
                             license=meta.license, compatibility=meta.compatibility,
                             metadata=meta.metadata, allowed_tools=meta.allowed_tools,
                             size=size, files=files, installed_at=time.time(),
                             hash=digest, version=version)
            _readable(folder)
            self._publish(folder, info, replace=replace)
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, folder: Path, info: SkillInfo, *, replace: bool) -> None:
        store = self.root / _STORE
        target = store / info.version
        manifest = store / f"{info.version}.json"
        link = self.root / info.name
        with self._lock:
            os.rename(folder, target)
            manifest.write_text(json.dumps(info.manifest()))
            relative = f"{_STORE}/{info.version}"
            try:
                if replace:
                    temporary = self.root / f".link-{secrets.token_hex(8)}"
                    os.symlink(relative, temporary)
                    os.replace(temporary, link)
                else:
                    os.symlink(relative, link)
            except FileExistsError:
                shutil.rmtree(target, ignore_errors=True)
                manifest.unlink(missing_ok=True)
                raise _exists(info.name) from None
            self._collect()

    # -- removing --------------------------------------------------------------------

    async def remove(self, name: str) -> SkillInfo:
        """Uninstall a skill (:class:`NotFound` ``skill_not_found`` if there is none)."""
        info = self.get(check_name(name, "name"))
        await asyncio.to_thread(self._remove_sync, info)
        self._skills.pop(name, None)
        log.info("skill %r removed", name)
        return info

    def _remove_sync(self, info: SkillInfo) -> None:
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / info.name)
            self._collect()

    # -- a skill's content -------------------------------------------------------------

    async def load(self, name: str) -> SkillMeta:
        """The skill's SKILL.md, read now: front matter and body."""
        folder = self.folder(name)
        data = await asyncio.to_thread(_read_capped, folder / SKILL_FILE,
                                       self.limits.max_skill_md_bytes + 1)
        return parse_skill_md(data)

    async def read(self, name: str, path: str, *, max_bytes: int) -> tuple[bytes, int]:
        """Up to ``max_bytes`` of one of the skill's files and its whole size; the path
        is confined to the skill's folder (no ``..``, no link followed)."""
        parts = member_parts(path, self.limits, "path")
        folder = self.folder(name)
        return await asyncio.to_thread(_read_within, folder, parts, max_bytes)


def _exists(name: str) -> Conflict:
    return Conflict(f"a skill named {name!r} is installed already: remove it first, or "
                    "install with replace=true", code="skill_exists")


def _read_capped(path: Path, cap: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(cap)


def _read_within(folder: Path, parts: tuple[str, ...], max_bytes: int) -> tuple[bytes, int]:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError:
                raise NotFound(f"no folder {part!r} in the skill",
                               code="skill_file_not_found") from None
            os.close(fd)
            fd = inner
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=fd)
        except OSError:
            raise NotFound(f"no file {'/'.join(parts)!r} in the skill",
                           code="skill_file_not_found") from None
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(file_fd)
            raise InvalidInput(f"{'/'.join(parts)!r} is a folder, not a file",
                               field="path")
        with os.fdopen(file_fd, "rb") as f:
            return f.read(max_bytes), info.st_size
    finally:
        os.close(fd)


def _readable(folder: Path) -> None:
    """Folders 0755, files 0644 (0755 where executable), whatever the umask: the
    daemon runs with 0077 (its home is its own), which made every file it wrote 0600
    and every folder 0700, so the agents' shells, each under its own uid, got
    "Permission denied" on the skills they were shown. (The home above stays closed:
    a sandbox sees a skill through its bind mount, not through the home's path.)"""
    folder.chmod(0o755)
    for parent, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o755, follow_symlinks=False)
        for name in files:
            path = os.path.join(parent, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)

"""The skill registry: installs from folders and archives, atomic publish and replace,
and the archive attacks (paths, links, devices, counts, bombs), each refused with
nothing half-installed."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from tests.skills._kit import folder, good_files, skill_md, tar_of, zip_of

from agentd.errors import AgentdError, Conflict, InvalidInput, NotFound, PayloadTooLarge
from agentd.skills import Limits, SkillRegistry


@pytest.fixture
async def registry(tmp_path: Path) -> SkillRegistry:
    reg = SkillRegistry(tmp_path / "skills", Limits(max_files=20, max_total_bytes=1 << 20,
                                                    max_file_bytes=512 << 10))
    await reg.start()
    return reg


def leftovers(reg: SkillRegistry) -> list[str]:
    """Everything under the registry but its two folders (a failed install leaves
    nothing: no link, no version, no staging)."""
    found = [str(p.relative_to(reg.root)) for p in reg.root.rglob("*")]
    return sorted(f for f in found if f not in (".store", ".staging"))


async def refused(reg: SkillRegistry, data: bytes, why: str,
                  kind: type[AgentdError] = InvalidInput) -> AgentdError:
    before = leftovers(reg)
    with pytest.raises(kind) as caught:
        await reg.install_archive(data)
    assert why in caught.value.message, caught.value.message
    assert leftovers(reg) == before
    assert not list((reg.root / ".staging").iterdir())
    return caught.value


@pytest.mark.parametrize("pack", [zip_of, tar_of], ids=["zip", "tar.gz"])
async def test_install_list_read_remove(registry: SkillRegistry, pack: object) -> None:
    info = await registry.install_archive(pack(good_files()))  # type: ignore[operator]
    assert (info.name, info.description) == ("pdf-tools", "Work with PDF files.")
    assert info.files == ("SKILL.md", "scripts/extract.py")
    assert info.hash.startswith("sha256:") and info.size > 0
    assert [s.name for s in registry.list()] == ["pdf-tools"]
    link = registry.root / "pdf-tools"
    assert link.is_symlink() and (link / "scripts" / "extract.py").is_file()
    assert (await registry.load("pdf-tools")).body.startswith("# PDF tools")
    data, size = await registry.read("pdf-tools", "scripts/extract.py", max_bytes=5)
    assert (data, size) == (b"print", 11)
    # A restarted registry finds it from the manifests.
    again = SkillRegistry(registry.root)
    await again.start()
    assert again.get("pdf-tools") == info
    await registry.remove("pdf-tools")
    assert registry.list() == [] and leftovers(registry) == []
    with pytest.raises(NotFound):
        registry.get("pdf-tools")


async def test_flat_archive_and_folder_install(registry: SkillRegistry, tmp_path: Path
                                               ) -> None:
    flat = await registry.install_archive(zip_of(good_files("flat"), top=None))
    assert flat.name == "flat"
    source = folder(tmp_path / "src", "from-disk")
    (source / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(source / "run.sh", 0o755)
    info = await registry.install_folder(source)
    assert info.files == ("SKILL.md", "run.sh", "scripts/extract.py")
    mode = (registry.folder("from-disk") / "run.sh").stat().st_mode
    assert mode & stat.S_IXUSR and not mode & stat.S_ISUID


async def test_hash_is_of_the_content(registry: SkillRegistry) -> None:
    one = await registry.install_archive(zip_of(good_files()))
    two = await registry.install_archive(tar_of(good_files()), replace=True)
    assert one.hash == two.hash and one.version != two.version
    changed = good_files()
    changed["scripts/extract.py"] = "print('y')\n"
    three = await registry.install_archive(zip_of(changed), replace=True)
    assert three.hash != one.hash


async def test_an_installed_name_needs_replace_and_replacing_is_atomic(
        registry: SkillRegistry) -> None:
    first = await registry.install_archive(zip_of(good_files(description="v1")))
    with pytest.raises(Conflict) as caught:
        await registry.install_archive(zip_of(good_files(description="v2")))
    assert caught.value.code == "skill_exists"
    assert registry.get("pdf-tools") == first
    second = await registry.install_archive(zip_of(good_files(description="v2")),
                                            replace=True)
    assert registry.get("pdf-tools") == second
    assert (registry.root / "pdf-tools" / "SKILL.md").read_text().count("v2") == 1
    # The old version is gone; only the live one and its manifest are kept.
    assert sorted(p.name for p in (registry.root / ".store").iterdir()) == sorted(
        [second.version, f"{second.version}.json"])


async def test_concurrent_installs_of_one_name_publish_one(registry: SkillRegistry) -> None:
    results = await asyncio.gather(
        *(registry.install_archive(zip_of(good_files(description=f"v{i}")))
          for i in range(4)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert len(list((registry.root / ".store").iterdir())) == 2


async def test_a_crash_leftover_is_collected_at_start(tmp_path: Path) -> None:
    reg = SkillRegistry(tmp_path / "skills")
    await reg.start()
    (reg.root / ".store" / "ghost.1").mkdir()
    (reg.root / ".store" / "ghost.1.json").write_text("{}")
    (reg.root / ".staging" / "half").mkdir(parents=True)
    await SkillRegistry(reg.root).start()
    assert leftovers(reg) == []


# -- bad packages ---------------------------------------------------------------------


async def test_bad_packages_install_nothing(registry: SkillRegistry) -> None:
    exc = await refused(registry, zip_of(good_files("Bad_Name")), "invalid skill name")
    assert exc.details["errors"][0]["field"] == "SKILL.md.name"
    exc = await refused(registry, zip_of({"SKILL.md": "# no front matter"}), "front matter")
    assert exc.details["errors"][0]["field"] == "SKILL.md"
    await refused(registry, zip_of(good_files("other")), "must equal its folder")
    await refused(registry, zip_of({"README": "x"}), "no SKILL.md")
    await refused(registry, zip_of({"a/SKILL.md": skill_md("a"), "b/x": "y"}, top=None),
                  "no SKILL.md")
    await refused(registry, b"not an archive at all", "not a zip or tar.gz")
    await refused(registry, b"PK\x03\x04garbage", "not a valid zip")
    await refused(registry, b"\x1f\x8bgarbage", "not a valid tar")


def _zip_raw(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pdf-tools/SKILL.md", skill_md())
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


@pytest.mark.parametrize("member, why", [
    ("/etc/evil", "absolute path"),
    ("pdf-tools/../../evil", "leaves its folder"),
    ("../evil", "leaves its folder"),
    ("pdf-tools\\..\\evil", "backslash"),
    ("pdf-tools/a\x01b", "control character"),
    ("/".join(["d"] * 20) + "/f", "deeper than"),
])
async def test_zip_paths_that_escape_are_refused(registry: SkillRegistry, member: str,
                                                 why: str) -> None:
    await refused(registry, _zip_raw([(zipfile.ZipInfo(member), b"x")]), why)
    assert not (registry.root.parent / "evil").exists()


async def test_zip_symlinks_and_devices_are_refused(registry: SkillRegistry) -> None:
    link = zipfile.ZipInfo("pdf-tools/passwd")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    await refused(registry, _zip_raw([(link, b"/etc/passwd")]), "not a regular file")
    fifo = zipfile.ZipInfo("pdf-tools/pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    await refused(registry, _zip_raw([(fifo, b"")]), "not a regular file")


async def test_zip_duplicates_and_setuid(registry: SkillRegistry) -> None:
    twice = zipfile.ZipInfo("pdf-tools/x")
    with pytest.warns(UserWarning):  # zipfile itself says "Duplicate name"
        data = _zip_raw([(twice, b"1"), (twice, b"2")])
    await refused(registry, data, "listed twice")
    setuid = zipfile.ZipInfo("pdf-tools/suid")
    setuid.external_attr = (stat.S_IFREG | stat.S_ISUID | 0o755) << 16
    info = await registry.install_archive(_zip_raw([(setuid, b"#!/bin/sh\n")]))
    mode = (registry.folder(info.name) / "suid").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID) and mode & stat.S_IXUSR


async def test_too_many_files(registry: SkillRegistry) -> None:
    many = {f"f{i}": "x" for i in range(25)} | {"SKILL.md": skill_md()}
    await refused(registry, zip_of(many), "more than 20")
    await refused(registry, tar_of(many), "more than 20")


async def test_zip_bomb_is_stopped_by_the_bytes_read(registry: SkillRegistry) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pdf-tools/SKILL.md", skill_md())
        archive.writestr("pdf-tools/zeros", b"\0" * (64 << 20))
    data = buffer.getvalue()
    assert len(data) < 200_000
    exc = await refused(registry, data, "larger than", PayloadTooLarge)
    assert exc.status == 413
    # A header that understates the size: the member is cut at the claim, and its
    # checksum then fails; nothing is installed either way.
    lying = data.replace((64 << 20).to_bytes(4, "little"), (10).to_bytes(4, "little"))
    await refused(registry, lying, "Bad CRC")


async def test_many_small_files_over_the_total(registry: SkillRegistry) -> None:
    files = {f"f{i}": b"\0" * (400 << 10) for i in range(4)} | {"SKILL.md": skill_md()}
    await refused(registry, zip_of(files), "package is larger", PayloadTooLarge)


def _tar_with(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        md = skill_md().encode()
        head = tarfile.TarInfo("pdf-tools/SKILL.md")
        head.size = len(md)
        archive.addfile(head, io.BytesIO(md))
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                  tarfile.BLKTYPE, tarfile.FIFOTYPE])
async def test_tar_links_and_devices_are_refused(registry: SkillRegistry, kind: bytes
                                                 ) -> None:
    member = tarfile.TarInfo("pdf-tools/evil")
    member.type = kind
    member.linkname = "/etc/shadow"
    await refused(registry, _tar_with(member), "not a regular file")


@pytest.mark.parametrize("name, why", [("/abs", "absolute"), ("../up", "leaves"),
                                       ("pdf-tools/../../up", "leaves")])
async def test_tar_paths_that_escape_are_refused(registry: SkillRegistry, name: str,
                                                 why: str) -> None:
    await refused(registry, _tar_with(tarfile.TarInfo(name), b"x"), why)


async def test_tar_gz_bomb_is_stopped_while_reading(registry: SkillRegistry) -> None:
    member = tarfile.TarInfo("pdf-tools/zeros")
    data = _tar_with(member, b"\0" * (8 << 20))
    assert len(data) < 40_000
    await refused(registry, data, "larger than", PayloadTooLarge)


async def test_a_huge_pax_header_is_not_read_whole(registry: SkillRegistry) -> None:
    member = tarfile.TarInfo("pdf-tools/x")
    member.pax_headers = {"comment": "a" * (8 << 20)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(member, io.BytesIO(b""))
    await refused(registry, buffer.getvalue(), "larger than", PayloadTooLarge)


async def test_a_folder_with_a_link_or_outside_path(registry: SkillRegistry, tmp_path: Path
                                                    ) -> None:
    source = folder(tmp_path / "src")
    (source / "secret").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput) as caught:
        await registry.install_folder(source)
    assert "link" in caught.value.message
    assert caught.value.details["errors"][0]["field"] == "body.path"
    with pytest.raises(InvalidInput, match="absolute"):
        await registry.install_folder(Path("relative/skill"))
    with pytest.raises(InvalidInput, match="cannot be read"):
        await registry.install_folder(tmp_path / "missing")
    assert leftovers(registry) == []


async def test_reading_a_file_stays_inside_the_skill(registry: SkillRegistry) -> None:
    await registry.install_archive(zip_of(good_files()))
    (registry.folder("pdf-tools") / "link").symlink_to("/etc/passwd")
    (registry.folder("pdf-tools") / "dirlink").symlink_to("/etc")
    for path in ("../../../../etc/passwd", "/etc/passwd", "scripts/../../x"):
        with pytest.raises(InvalidInput):
            await registry.read("pdf-tools", path, max_bytes=100)
    for path in ("link", "dirlink/passwd", "nothing"):
        with pytest.raises(NotFound):
            await registry.read("pdf-tools", path, max_bytes=100)
    with pytest.raises(InvalidInput, match="folder"):
        await registry.read("pdf-tools", "scripts", max_bytes=100)

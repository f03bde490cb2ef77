"""Building skill packages for the tests: folders, zips and tarballs, good and hostile."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path


def skill_md(name: str = "pdf-tools", description: str = "Work with PDF files.",
             body: str = "# PDF tools\n\nRun scripts/extract.py on the file.\n",
             extra: str = "") -> str:
    return f"---\nname: {name}\ndescription: {description}\n{extra}---\n{body}"


def folder(root: Path, name: str = "pdf-tools", **kwargs: str) -> Path:
    path = root / name
    (path / "scripts").mkdir(parents=True)
    (path / "SKILL.md").write_text(skill_md(name, **kwargs))
    (path / "scripts" / "extract.py").write_text("print('extracted')\n")
    return path


def zip_of(files: dict[str, bytes | str], *, top: str | None = "pdf-tools") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{top}/{name}" if top else name, data)
    return buffer.getvalue()


def tar_of(files: dict[str, bytes | str], *, top: str | None = "pdf-tools",
           gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def good_files(name: str = "pdf-tools", **kwargs: str) -> dict[str, bytes | str]:
    return {"SKILL.md": skill_md(name, **kwargs), "scripts/extract.py": "print('x')\n"}

"""SKILL.md parsing and validation: the name rules, the front matter, the sizes; each
refusal names its field."""

from __future__ import annotations

import pytest
from tests.skills._kit import skill_md

from agentd.errors import InvalidInput
from agentd.skills import check_name, parse_skill_md


def refused(data: str | bytes, folder: str | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_skill_md(data.encode() if isinstance(data, str) else data, folder)
    assert caught.value.code == "invalid_skill"
    return caught.value


def field(exc: InvalidInput) -> str:
    return str(exc.details["errors"][0]["field"])


def test_a_good_skill_md_is_read_whole() -> None:
    meta = parse_skill_md(skill_md(extra="license: MIT\ncompatibility: needs python3\n"
                                         "metadata:\n  author: ann\n  version: 1.0\n"
                                         "allowed-tools: Bash(python:*) Read\n").encode(),
                          "pdf-tools")
    assert (meta.name, meta.description, meta.license, meta.compatibility) == (
        "pdf-tools", "Work with PDF files.", "MIT", "needs python3")
    assert meta.metadata == {"author": "ann", "version": "1.0"}
    assert meta.allowed_tools == ("Bash(python:*)", "Read")
    assert meta.body == "# PDF tools\n\nRun scripts/extract.py on the file."


@pytest.mark.parametrize("name", ["a", "pdf", "pdf-tools", "x1-2y", "a" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "required"), ("a" * 65, "at most 64"), ("PDF", "lowercase"), ("-pdf", "hyphen"),
    ("pdf-", "hyphen"), ("pdf--tools", "hyphen"), ("pdf_tools", "lowercase"),
    ("pdf tools", "lowercase"), ("../x", "lowercase"), ("pdé", "lowercase"),
    (".hidden", "lowercase"),
])
def test_bad_names_are_refused_naming_the_field(name: str, why: str) -> None:
    exc = refused(skill_md(name=f'"{name}"'))
    assert field(exc) == "SKILL.md.name" and why in exc.message


@pytest.mark.parametrize("text, where, why", [
    ("no front matter\n", "SKILL.md", "front matter"),
    ("---\nname: x\ndescription: y\n", "SKILL.md", "front matter"),  # never closed
    ("---\n: [\n---\nbody", "SKILL.md", "not valid YAML"),
    ("---\n- a\n- b\n---\n", "SKILL.md", "mapping"),
    ("---\ndescription: d\n---\n", "SKILL.md.name", "no name"),
    ("---\nname: x\n---\n", "SKILL.md.description", "no description"),
    ("---\nname: x\ndescription: ''\n---\n", "SKILL.md.description", "1-1024"),
    ("---\nname: x\ndescription: " + "d" * 1025 + "\n---\n", "SKILL.md.description",
     "1-1024"),
    ("---\nname: x\ndescription: yes\n---\n", "SKILL.md.description", "string"),
    ("---\nname: x\ndescription: d\nnmae: y\n---\n", "SKILL.md.nmae", "unknown"),
    ("---\nname: 7\ndescription: d\n---\n", "SKILL.md.name", "required"),
    ("---\nname: x\ndescription: d\nmetadata: [1]\n---\n", "SKILL.md.metadata", "map"),
    ("---\nname: x\ndescription: d\ncompatibility: " + "c" * 501 + "\n---\n",
     "SKILL.md.compatibility", "1-500"),
    ("---\nname: x\ndescription: d\nallowed-tools: 'a;rm -rf'\n---\n",
     "SKILL.md.allowed-tools", "tool names"),
    ("---\nname: x\ndescription: \"a\\x00b\"\n---\n", "SKILL.md.description", "control"),
    ("---\nname: x\ndescription: !!python/object/apply:os.system ['true']\n---\n",
     "SKILL.md", "not valid YAML"),
])
def test_bad_front_matter_is_refused_naming_the_field(text: str, where: str, why: str
                                                      ) -> None:
    exc = refused(text)
    assert field(exc) == where and why in exc.message, exc.message


def test_the_name_must_equal_the_folder() -> None:
    exc = refused(skill_md("pdf-tools"), folder="pdf")
    assert field(exc) == "SKILL.md.name" and "folder" in exc.message


def test_size_and_encoding() -> None:
    assert "at most" in refused(skill_md(body="x" * (256 << 10))).message
    assert "UTF-8" in refused(b"---\nname: x\ndescription: \xff\n---\n").message


def test_an_alias_bomb_in_allowed_tools_is_refused_cheaply() -> None:
    # Nested aliased lists: str() of them would be exponentially long.
    levels = ["&l0 [x, x, x, x, x, x, x, x]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 8)}]" for i in range(1, 8)]
    bomb = f"---\nname: x\ndescription: d\nallowed-tools: [{', '.join(levels)}]\n---\n"
    exc = refused(bomb)
    assert field(exc) == "SKILL.md.allowed-tools"

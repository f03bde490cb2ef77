"""The `skill` commands: install, list, show, remove (the daemon's registry), enable
and disable (an agent's skills).

A skill's description and instructions are a package's text: printed as plain
``Text``, never parsed as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentd.cli._common import AgentArg, JsonFlag, connect, echo_json, fail, out
from agentd.cli._render import short, when

__all__ = ["skill_app"]

skill_app = typer.Typer(
    name="skill",
    help="Skills: packages of instructions and files (a folder with SKILL.md) installed "
         "in the daemon and enabled per agent.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SkillArg = Annotated[str, typer.Argument(metavar="SKILL", help="The skill's name.",
                                         show_default=False)]


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def skills_table(skills: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("NAME", style="bold", no_wrap=True)
    table.add_column("FILES", justify="right", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("INSTALLED", style="dim", no_wrap=True)
    table.add_column("DESCRIPTION")
    for skill in skills:
        table.add_row(Text(str(skill.get("name", ""))), str(len(skill.get("files") or [])),
                      _size(int(skill.get("size") or 0)), when(skill.get("installed_at")),
                      Text(short(str(skill.get("description") or ""), 120)))
    return table


@skill_app.command("install")
def install(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="PATH|ARCHIVE", help="A skill's folder (zipped and uploaded), or a .zip "
                                     "or .tar.gz archive.", show_default=False)],
    replace: Annotated[bool, typer.Option("--replace",
                                          help="Replace an installed skill of the same "
                                               "name.")] = False,
    on_host: Annotated[bool, typer.Option(
        "--on-host", help="PATH is a folder on the daemon's host: the daemon copies it "
                          "(admin tokens only).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Install a skill in the daemon.

    [bold]Examples[/]
      $ agentd skill install ./pdf-tools
      $ agentd skill install pdf-tools.zip --replace
      $ agentd skill install /srv/skills/pdf-tools --on-host
    """
    path = Path(source)
    if not on_host and not path.exists():
        fail(f"{source}: no such file or folder")
    with connect(ctx) as client:
        skill = client.install_skill(path, replace=replace, on_host=on_host)
    if as_json:
        echo_json(skill)
        return
    out().print(Text(f"installed skill {skill['name']} ({len(skill['files'])} files, "
                     f"{_size(int(skill['size']))}, {skill['hash'][:19]})"), soft_wrap=True)


@skill_app.command("list")
def list_(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the installed skills.

    [bold]Example[/]
      $ agentd skill list
    """
    with connect(ctx) as client:
        skills = client.list_skills()
    if as_json:
        echo_json(skills)
    elif not skills:
        out().print(Text("no skills installed; agentd skill install PATH adds one",
                         style="dim"), soft_wrap=True)
    else:
        out().print(skills_table(skills))


@skill_app.command("show")
def show(ctx: typer.Context, skill: SkillArg, as_json: JsonFlag = False) -> None:
    """Print a skill: its description, files, then its instructions verbatim.

    [bold]Example[/]
      $ agentd skill show pdf-tools
    """
    with connect(ctx) as client:
        found = client.get_skill(skill)
    if as_json:
        echo_json(found)
        return
    console = out()
    console.print(Text(f"{found['name']}: {len(found['files'])} files, "
                       f"{_size(int(found['size']))}, installed "
                       f"{when(found.get('installed_at'))}, {found['hash']}", style="dim"),
                  soft_wrap=True)
    console.print(Text(str(found.get("description") or "")), soft_wrap=True)
    for name in found.get("files") or []:
        console.print(Text(f"  {name}", style="dim"), soft_wrap=True)
    console.print(Text(str(found.get("body") or "")), soft_wrap=True)


@skill_app.command("remove")
def remove(ctx: typer.Context, skill: SkillArg) -> None:
    """Uninstall a skill.

    [bold]Example[/]
      $ agentd skill remove pdf-tools
    """
    with connect(ctx) as client:
        client.remove_skill(skill)
    out().print(Text(f"removed skill {skill}"), soft_wrap=True)


@skill_app.command("enable")
def enable(ctx: typer.Context, agent: AgentArg, skill: SkillArg) -> None:
    """Give an agent an installed skill.

    [bold]Example[/]
      $ agentd skill enable demo pdf-tools
    """
    with connect(ctx) as client:
        found = client.enable_skill(agent, skill)
    enabled = (found.get("settings") or {}).get("skills", {}).get("enabled", [])
    out().print(Text(f"{agent}'s skills: {', '.join(enabled)}"), soft_wrap=True)


@skill_app.command("disable")
def disable(ctx: typer.Context, agent: AgentArg, skill: SkillArg) -> None:
    """Take a skill from an agent.

    [bold]Example[/]
      $ agentd skill disable demo pdf-tools
    """
    with connect(ctx) as client:
        found = client.disable_skill(agent, skill)
    enabled = (found.get("settings") or {}).get("skills", {}).get("enabled", [])
    out().print(Text(f"{agent}'s skills: {', '.join(enabled) or 'none'}"), soft_wrap=True)

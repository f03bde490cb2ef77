"""The ``agentd`` command line (typer); it talks to the daemon over HTTP only."""

from agentd.cli.app import app, main

__all__ = ["app", "main"]

"""The live-daemon fixtures of tests/cli, for the skill CLI and client tests."""

from tests.cli.conftest import agent_name, cli, live_home, live_url

__all__ = ["agent_name", "cli", "live_home", "live_url"]

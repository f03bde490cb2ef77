"""Policy checks on what a model asks the runtime to do.

The shell analyser's names are imported on first use (:mod:`agentd.lazy`): the CLI's
client imports ``agentd.security.tls`` and needs nothing of the analyser."""

from typing import TYPE_CHECKING

from agentd.lazy import exports

if TYPE_CHECKING:
    from agentd.security.commands import CATEGORIES, Analysis, Finding, analyse

__all__ = ["CATEGORIES", "Analysis", "Finding", "analyse"]

__getattr__ = exports(__name__, dict.fromkeys(__all__, "agentd.security.commands"))

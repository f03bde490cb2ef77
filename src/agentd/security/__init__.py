"""Policy checks on what a model asks the runtime to do."""

from agentd.security.commands import CATEGORIES, Analysis, Finding, analyse

__all__ = ["CATEGORIES", "Analysis", "Finding", "analyse"]

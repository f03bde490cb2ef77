"""The ``memory`` area of an agent's settings, and the daemon's ``[memory]`` section.

Per agent (``settings.memory``): which shared namespaces it reads and writes, how its
searches weigh full text against vectors, auto-recall, compaction and consolidation.
Per daemon (``Settings.memory``): the embedder and the index, which every agent shares
(a namespace's vectors must all come from one embedder).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agentd.trust import MODEL_SPEC

__all__ = ["DEFAULT_EMBEDDER", "NAMESPACE_PATTERN", "CompactionSettings", "ConsolidationSettings",
           "MemoryConfig", "MemorySettings"]

#: The offline default (docs/design-notes.md, "Memory: the offline embedder, measured").
DEFAULT_EMBEDDER = "onnx:all-minilm-l6-v2-int8"
#: A shared namespace's name (an agent's own namespace has no name: it is the agent).
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


Namespace = Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN)]


class _Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompactionSettings(_Area):
    """When and how a session's older turns are compacted instead of dropped."""

    auto: bool = Field(True, description="Compact before a model call whose context "
                                         "passes `threshold` of the model's window "
                                         "(needs the model in the catalog).")
    threshold: float = Field(0.8, ge=0.1, le=0.99, allow_inf_nan=False,
                             description="The share of the context window that "
                                         "triggers an automatic compaction.")
    strategy: Literal["summarize", "clear_tool_results"] = Field(
        "summarize", description="`summarize`: older turns are replaced by a summary "
                                 "from `model`; `clear_tool_results`: older tool results "
                                 "are replaced by a short placeholder, the calls kept "
                                 "(no model call).")
    model: Annotated[str | None, MODEL_SPEC] = Field(
                              None, min_length=1, max_length=200,
                              description="`provider:model` that writes summaries "
                                          "(default: the agent's model).")
    keep_turns: int = Field(2, ge=1, le=100, description="The latest turns (a user "
                                                         "message and what answered "
                                                         "it) always kept verbatim.")
    max_summary_tokens: int = Field(1024, ge=64, le=16_384,
                                    description="The summary's output limit.")


class ConsolidationSettings(_Area):
    """Turning new history into long-term memories and block updates."""

    auto: bool = Field(False, description="Consolidate when the agent goes idle "
                                          "(else only on demand).")
    model: Annotated[str | None, MODEL_SPEC] = Field(
                              None, min_length=1, max_length=200,
                              description="`provider:model` that consolidates "
                                          "(default: the agent's model).")
    max_entries: int = Field(20, ge=1, le=200, description="Entries one consolidation "
                                                           "may write.")


class MemorySettings(_Area):
    """An agent's long-term memory: namespaces, search, recall, compaction."""

    namespaces: list[Namespace] = Field(
        default_factory=list, max_length=32,
        description="Shared namespaces this agent may read and write besides its own "
                    "(each matching `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`).")
    vector_weight: float = Field(
        0.4, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Hybrid search: the vector side's weight in the fusion of the two "
                    "sides' min-max normalised scores (0: full text only, 1: vectors "
                    "only; measured on LoCoMo in docs/benchmarks.md).")
    neighbour_weight: float = Field(
        0.2, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Hybrid search: how much of the best score of the entries written "
                    "just before and after an entry is added to its own (0: none). "
                    "Conversation turns answer the turn before them.")
    auto_recall: bool = Field(False, description="Put the most relevant entries into "
                                                 "the context before each model call "
                                                 "(logged in the step's event).")
    recall_limit: int = Field(5, ge=1, le=50, description="Entries auto-recall may add.")
    recall_tokens: int = Field(800, ge=32, le=32_000,
                               description="Auto-recall's token budget.")
    recall_min_score: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                    description="Entries scoring below this are not "
                                                "recalled automatically.")
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    consolidation: ConsolidationSettings = Field(default_factory=ConsolidationSettings)


class MemoryConfig(_Area):
    """The daemon's ``[memory]`` section: shared by every agent."""

    embedder: str = Field(DEFAULT_EMBEDDER, min_length=1, max_length=200,
                          description="`provider:model` of the embedder: "
                                      "`onnx:all-minilm-l6-v2-int8` (offline, default), "
                                      "`openai:<model>` (an OpenAI-compatible endpoint), "
                                      "`none` (full-text search only).")
    ann_threshold: int = Field(50_000, ge=0, le=100_000_000,
                               description="Entries in a namespace above which vector "
                                           "search uses the approximate index instead "
                                           "of an exact scan (0: always approximate).")
    max_entry_chars: int = Field(32_000, ge=1, le=1_000_000,
                                 description="The longest entry content accepted.")
    max_import_mb: int = Field(64, ge=1, le=4096,
                               description="The largest memory import body (JSON lines), "
                                           "instead of `max_body_bytes`.")

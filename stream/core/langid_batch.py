"""py3langid's scoring for many texts at once, with the same numbers as one text at a time.

py3langid walks an Aho-Corasick automaton over each text's UTF-8 bytes in a Python loop, one
byte per iteration: a third of the English filter's cost. In such an automaton the state after
a byte is the longest suffix of the text so far that is a node of the feature trie, so it
depends only on the last `depth` bytes (the trie's depth). Every state is therefore found by
`depth` vectorised steps over all texts of a batch joined by NUL bytes, which the model maps to
the root from every state. The per-text feature counts come out in the order py3langid's
`Counter` holds them, and the scoring arithmetic is py3langid's own, so the scores are
bit-identical (`tests/unit/test_lang.py` checks against `_decide`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BatchScorer"]

_CHUNK = 1024


class BatchScorer:
    """Raw naive-Bayes scores of py3langid's `LanguageIdentifier` (`norm_probs=False`)."""

    def __init__(self, identifier: Any) -> None:
        self._identifier = identifier
        width = identifier.tk_nextmove.itemsize
        # A view of py3langid's own table (39 MB): no copy.
        self._next = np.frombuffer(identifier.tk_nextmove, dtype=f"u{width}")
        self._rowbase = np.asarray(identifier._rowbase, dtype=np.int64)
        self._out = np.asarray(identifier.tk_output, dtype=np.int64)
        self._features = int(self._out.max()) + 1
        self._depth = _trie_depth(identifier.tk_nextmove, identifier._rowbase)

    @staticmethod
    def supports(identifier: Any) -> bool:
        """True when the model is laid out as this class expects: a NUL byte returns every
        state to the root, and the root emits no feature."""
        needed = ("tk_nextmove", "_rowbase", "tk_output", "nb_ptc", "nb_pc", "_alias_pairs")
        if not all(hasattr(identifier, name) for name in needed):
            return False
        if getattr(identifier, "_norm_probs", True) or identifier.tk_output[0] >= 0:
            return False
        width = identifier.tk_nextmove.itemsize
        rows = np.frombuffer(identifier.tk_nextmove, dtype=f"u{width}").reshape(-1, 256)
        return bool((rows[:, 0] == 0).all())

    def scores(self, texts: Sequence[str]) -> list[np.ndarray]:
        encoded = [self._identifier._encode(t) for t in texts]
        out: list[np.ndarray] = []
        # Chunks bound the walk's arrays (8 bytes a byte of text, several alive) when the
        # trainer prepares a whole data set in one call.
        for start in range(0, len(encoded), _CHUNK):
            out.extend(self._score(c) for c in self._counts(encoded[start : start + _CHUNK]))
        return out

    def _counts(self, encoded: list[bytes]) -> list[tuple[np.ndarray, np.ndarray] | None]:
        depth = self._depth
        joined = np.frombuffer(b"\0" * depth + b"\0".join(encoded), dtype=np.uint8)
        size = len(joined) - depth
        states = np.zeros(size, dtype=np.int64)
        for k in range(1, depth + 1):
            states = self._next[self._rowbase[states] + joined[k : k + size]]
        features = self._out[states]
        text_of = np.cumsum(joined[depth:] == 0)
        hit = features >= 0
        keys = text_of[hit] * self._features + features[hit]
        unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        unique, counts = unique[order], counts[order]
        owner = unique // self._features
        bounds = np.searchsorted(owner, np.arange(len(encoded) + 1))
        ids = (unique % self._features).astype(np.intp)
        values = counts.astype(np.float32)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            out.append((ids[start:end].copy(), values[start:end].copy()) if end > start else None)
        return out

    def _score(self, counts: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        ident = self._identifier
        # py3langid's _raw_score and _decide, step for step.
        if counts is None:
            floor = float(np.finfo(np.float32).min)
            scores: np.ndarray = np.full(len(ident.nb_classes), floor, dtype=np.float32)
        else:
            idx, values = counts
            scores = np.log1p(values) @ ident.nb_ptc[idx] + ident.nb_pc
        for i, j in ident._alias_pairs:
            scores[i] = max(scores[i], scores[j])
            scores[j] = float(np.finfo(np.float32).min)
        return scores


def _trie_depth(nextmove: Any, rowbase: Sequence[int]) -> int:
    """The longest shortest path from the root: the automaton's trie depth."""
    rows = np.frombuffer(nextmove, dtype=f"u{nextmove.itemsize}").reshape(-1, 256)
    base = np.asarray(rowbase, dtype=np.int64) >> 8
    seen = np.zeros(len(base), dtype=bool)
    seen[0] = True
    frontier = np.array([0], dtype=np.int64)
    depth = 0
    while True:
        reached: list[np.ndarray] = []
        for start in range(0, len(frontier), 2048):
            reached.append(np.unique(rows[base[frontier[start : start + 2048]]]))
        nxt = np.unique(np.concatenate(reached)).astype(np.int64)
        nxt = nxt[~seen[nxt]]
        if not len(nxt):
            return depth
        seen[nxt] = True
        frontier = nxt
        depth += 1

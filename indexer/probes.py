"""Query-like texts made from items: what a search bar sends, for recall checks and fine-tuning.

Real queries are short and land between the catalog's clusters, unlike the items' own
title+text vectors: a title, a few consecutive words of the text, or a typeahead-like prefix.
The rebuild's recall check searches with them (:mod:`indexer.pipeline`); fine-tuning pairs each
with its item so the encoder keeps finding items from such queries (:mod:`indexer.finetune_stage`).
"""

from __future__ import annotations

import numpy as np


def probe_text(title: str | None, text: str | None, rng: np.random.Generator) -> str:
    """One query-like text for an item: its title, 3-6 consecutive words of its text, or a prefix
    of its title (at least 3 characters), chosen with ``rng``; "" when the item has no words."""
    title, words = (title or "").strip(), (text or "").split()
    kind = int(rng.integers(3))
    if kind == 1 and len(words) >= 3:
        size = int(rng.integers(3, 7))
        start = int(rng.integers(0, max(1, len(words) - size + 1)))
        return " ".join(words[start : start + size])
    if kind == 2 and len(title) > 3:
        return title[: int(rng.integers(3, len(title)))].strip()
    return title or " ".join(words[:6])


def probe_texts(items: list[tuple[str, str]], seed: int = 0) -> list[str]:
    """:func:`probe_text` of each (title, text), seeded; empty results are dropped."""
    rng = np.random.default_rng(seed)
    return [probe for probe in (probe_text(title, text, rng) for title, text in items) if probe]


__all__ = ["probe_text", "probe_texts"]

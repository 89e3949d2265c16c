"""The hand-written search queries of ``hand_queries.json`` on the demo catalog, pretrained encoder.

``benchmarks/bench_finetune_search.py`` checks that fine-tuning does not make these worse; this
test keeps the set honest: the pretrained encoder answers most of them from the right category.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.demo import ITEMS_FILE
from service.settings import load_settings
from service.store.items import embedding_text
from service.vectors.text_encoder import load_text_encoder

pytestmark = pytest.mark.slow  # embeds the demo catalog with the real MiniLM

HAND = Path(__file__).with_name("hand_queries.json")


def test_hand_written_queries_are_answered_from_their_categories():
    spec = json.loads(HAND.read_text())["queries"]
    items = [json.loads(line) for line in ITEMS_FILE.read_text().splitlines() if line.strip()]
    categories = {item["category"] for item in items}
    assert all(set(q["categories"]) <= categories for q in spec), "every named category exists in the demo"
    encoder = load_text_encoder(load_settings({}, environ={}))
    vectors = encoder.encode([embedding_text(i["title"], i.get("text")) for i in items])
    queries = encoder.encode([q["q"] for q in spec])
    top = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    p5 = [np.mean([items[j]["category"] in q["categories"] for j in row]) for q, row in zip(spec, top)]
    first = [items[row[0]]["category"] in q["categories"] for q, row in zip(spec, top)]
    assert np.mean(p5) >= 0.8, dict(zip([q["q"] for q in spec], p5))
    assert np.mean(first) >= 0.9

"""A small world for use-case tests below Flask: a real database, an in-memory index, no model.

Items go into the migrated database of the ``engine`` fixture (SQLite and PostgreSQL); their
vectors are hand-made unit vectors along a few "topic" axes, in a FAISS flat index wrapped as a
:class:`LoadedSpace`, so tests know the right answer without loading an encoder.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from service.store.items import upsert_items
from service.store.models import Item
from service.store.records import ItemRecord
from service.vectors.delta import Delta
from service.vectors.index_store import LoadedSpace

DIM = 8
# (external id, kind, category, title, topic axis, tilt): items on one axis are alike.
CATALOG = [
    ("boot", "product", "shoes", "Leather hiking boot", 0, 0.0),
    ("runner", "product", "shoes", "Trail running shoe", 0, 0.2),
    ("sandal", "product", "shoes", "Summer sandal", 0, 0.5),
    ("knife", "product", "kitchen", "Carbon steel chef knife", 1, 0.0),
    ("kettle", "product", "kitchen", "Stovetop kettle", 1, 0.3),
    ("whetstone-guide", "article", "kitchen", "Sharpening a knife on a whetstone", 1, 0.1),
    ("rain-guide", "article", "outdoor", "Staying dry on rainy hikes", 2, 0.0),
    ("jacket", "product", "outdoor", "Waterproof rain jacket", 2, 0.2),
]


def topic_vector(axis: int, tilt: float = 0.0) -> np.ndarray:
    """A unit vector mostly along ``axis``, tilted towards the last axis."""
    v = np.zeros(DIM, dtype=np.float32)
    v[axis], v[-1] = 1.0, tilt
    return v / np.linalg.norm(v)


def build_world(session_factory) -> tuple[dict[str, int], LoadedSpace]:
    """Insert the catalog; return external id -> primary key and the text space over it."""
    import faiss

    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id=e, kind=k, title=t, category=c)
                                               for e, k, c, t, _axis, _tilt in CATALOG])
        session.commit()
        pks = dict(session.execute(select(Item.external_id, Item.id)).all())
    rows = sorted((pks[e], topic_vector(axis, tilt)) for e, _k, _c, _t, axis, tilt in CATALOG)
    ids = np.array([pk for pk, _ in rows], dtype=np.int64)
    vectors = np.stack([v for _, v in rows]).astype(np.float32)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    space = LoadedSpace("text", index, ids, vectors, {}, {"name": "topics", "revision": "t1", "dim": DIM})
    return pks, space


def empty_delta() -> Delta:
    return Delta("text", DIM, "t1")


def encode_by_words(query: str) -> np.ndarray:
    """A query "encoder" that knows three words: shoe, knife, rain."""
    axis = {"shoe": 0, "knife": 1, "rain": 2}
    for word, a in axis.items():
        if word in query.lower():
            return topic_vector(a)
    return topic_vector(3)

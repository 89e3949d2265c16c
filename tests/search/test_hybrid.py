"""The search use cases below Flask: a real database, an in-memory index, a word-based encoder."""

from __future__ import annotations

import pytest

from service.search.hybrid import search_text, search_vector
from service.store.items import Filters
from tests.usecase_world import build_world, empty_delta, encode_by_words, topic_vector


@pytest.fixture
def world(session_factory):
    pks, space = build_world(session_factory)
    with session_factory() as session:
        yield {"pks": pks, "space": space, "session": session, "names": {v: k for k, v in pks.items()}}


def names(world, page) -> list[str]:
    return [item.external_id for item, _score, _signals in page.hits]


def test_semantic_search_ranks_by_the_query_vector_and_pages(world):
    page = search_text(session=world["session"], query="a shoe for trails", mode="semantic", k=2, offset=0,
                       filters=Filters(), space=world["space"], delta=empty_delta(), encode=encode_by_words)
    assert names(world, page) == ["boot", "runner"] and page.has_more
    assert all(signals == ("semantic",) for _i, _s, signals in page.hits)
    nxt = search_text(session=world["session"], query="a shoe for trails", mode="semantic", k=2, offset=2,
                      filters=Filters(), space=world["space"], delta=empty_delta(), encode=encode_by_words)
    assert names(world, nxt)[0] == "sandal"


def test_filters_never_leave_a_page_short(world):
    page = search_text(session=world["session"], query="shoe", mode="semantic", k=3, offset=0,
                       filters=Filters(kinds=("article",)), space=world["space"], delta=empty_delta(),
                       encode=encode_by_words)
    assert set(names(world, page)) == {"whetstone-guide", "rain-guide"} and not page.has_more


def test_keyword_mode_needs_no_index_and_hybrid_fuses_both_lists(world):
    kw = search_text(session=world["session"], query="whetstone", mode="keyword", k=5, offset=0, filters=Filters())
    assert names(world, kw) == ["whetstone-guide"] and kw.hits[0][2] == ("keyword",)
    hy = search_text(session=world["session"], query="knife", mode="hybrid", k=3, offset=0, filters=Filters(),
                     space=world["space"], delta=empty_delta(), encode=encode_by_words)
    # The chef knife matches both lists (semantic axis and the word), so fusion puts it first.
    assert names(world, hy)[0] == "knife"
    assert set(hy.hits[0][2]) == {"semantic", "keyword"}


def test_a_fresh_vector_shadows_the_indexed_one(world):
    delta = empty_delta()
    delta.apply(world["pks"]["kettle"], "t1", topic_vector(2).tobytes())  # the kettle now reads as rain gear
    page = search_vector(session=world["session"], space=world["space"], delta=delta, vector=topic_vector(2), k=3,
                         offset=0, filters=Filters())
    assert "kettle" in names(world, page)
    kettle = next(h for h in page.hits if h[0].external_id == "kettle")
    assert "fresh" in kettle[2]


def test_search_vector_honours_exclusions(world):
    boot = world["pks"]["boot"]
    page = search_vector(session=world["session"], space=world["space"], delta=None, vector=topic_vector(0), k=2,
                         offset=0, filters=Filters(exclude=frozenset({boot})))
    assert names(world, page) == ["runner", "sandal"]


def test_semantic_search_without_a_space_is_a_clear_error(world):
    with pytest.raises(ValueError, match="space"):
        search_text(session=world["session"], query="x", mode="hybrid", k=1, offset=0, filters=Filters())
    with pytest.raises(ValueError, match="mode"):
        search_text(session=world["session"], query="x", mode="fuzzy", k=1, offset=0, filters=Filters())

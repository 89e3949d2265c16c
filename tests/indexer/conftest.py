"""Fixtures shared by the index tests."""

from __future__ import annotations

import faiss
import pytest


@pytest.fixture(scope="module", autouse=True)
def one_omp_thread():
    """One OpenMP thread per index test module.

    The indexes are tiny, and on a shared 2-core runner OpenMP's spinning threads make contended
    multi-threaded k-means several times slower than one thread.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)

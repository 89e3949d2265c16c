"""MovieLens-100K for the offline recommendation benchmarks: download, parse, split, export.

The data is the copy RecBole ships inside its wheel (``recbole==1.2.1``,
``recbole/dataset_example/ml-100k/``). :func:`ensure_ml100k` downloads that wheel with pip
(``--no-deps``; recbole is never imported or installed) and extracts only that folder into
``benchmarks/_data/ml-100k`` (git-ignored). MovieLens' terms forbid redistribution: never commit
the data or anything derived row by row from it (the catalog/event files :func:`to_catalog`
writes included); aggregate metrics are fine.

Files (tab-separated, first line a typed header):

* ``ml-100k.inter``: ``user_id:token  item_id:token  rating:float  timestamp:float`` (100,000
  ratings 1-5 by 943 users, Unix seconds).
* ``ml-100k.item``: ``item_id:token  movie_title:token_seq  release_year:token  class:token_seq``
  (1,682 movies; genres space-separated, e.g. ``Animation Children's Comedy``).

Cleaning (the only deviations from the raw file): the genre ``unknown`` is dropped; a
non-numeric year is recovered from a trailing ``(YYYY)`` in the title (item 1412, whose title
still carries it) or left None (item 267, title and year ``unkonwn``, titled ``unknown`` here).

Ids exported to the service are prefixed: item 242 -> ``"ml-242"``, user 196 -> ``"u196"``.

The benchmark protocol (:func:`load_split`): positive interactions are ratings >= 4; the split
is :func:`service.recommend.evaluation.holdout_split` over the positives in file order (see
:data:`SPLIT_DESCRIPTION`).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from service.recommend.evaluation import Split, holdout_split

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "_data" / "ml-100k"
INTER_FILE = "ml-100k.inter"
ITEM_FILE = "ml-100k.item"

POSITIVE_THRESHOLD = 4.0
ITEM_PREFIX = "ml-"
USER_PREFIX = "u"

SPLIT_DESCRIPTION = (
    "MovieLens-100K from the recbole==1.2.1 wheel (recbole/dataset_example/ml-100k/ml-100k.inter, "
    "100,000 ratings). Positive interactions = rows with rating >= 4 (55,375 rows); all other rows "
    "are dropped. For each user, that user's positive rows are ordered by timestamp ascending, ties "
    "broken by the row's position in ml-100k.inter (earlier line = earlier). The last n_test rows "
    "form the test set, the n_valid rows before them the validation set, the rest the training set. "
    "Users with fewer than n_test + n_valid + min_train positives keep all rows in training and are "
    "not evaluated. Hyperparameters are tuned by fitting on train and scoring validation; the "
    "reported numbers fit on train + validation and score test. The fitting period of an evaluated "
    "user ends at the timestamp of their first held-out positive (first validation positive when "
    "scoring validation, first test positive when scoring test): as in the service's evaluator "
    "(service.recommend.offline_eval.Evaluator.world), every rating of that user at or after it is "
    "left out, so fitting positives tied in time with the first held-out one are dropped from the "
    "fitting matrices too. Every item the user rated (any rating value) in the fitting period is "
    "excluded from recommendations, for every method; the candidate set is the rest of the whole "
    "catalog (1,682 movies). Implemented by service.recommend.evaluation.holdout_split (deterministic)."
)


# --------------------------------------------------------------------------------------------------
# Download


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_ml100k(data_dir: Path = DEFAULT_DATA_DIR, *, quiet: bool = False) -> Path:
    """Make sure ``ml-100k.inter`` and ``ml-100k.item`` exist in ``data_dir``; returns data_dir.

    When missing: ``pip download recbole==1.2.1 --no-deps --only-binary=:all:`` into a temporary
    folder, open the wheel as a zip and extract only ``recbole/dataset_example/ml-100k/*`` (flat)
    into ``data_dir``. Prints where the data came from.
    """
    data_dir = Path(data_dir)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if (data_dir / INTER_FILE).is_file() and (data_dir / ITEM_FILE).is_file():
        say(f"ML-100K: using {data_dir} (extracted earlier from the {RECBOLE_REQUIREMENT} wheel)")
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recbole-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, RECBOLE_REQUIREMENT]
        say(f"ML-100K: not found in {data_dir}; downloading: {' '.join(cmd[2:])}")
        try:
            subprocess.run(cmd, check=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            raise RuntimeError(
                f"could not download {RECBOLE_REQUIREMENT} with pip ({exc}); download the wheel by "
                f"hand and extract {WHEEL_FOLDER}* into {data_dir}"
            ) from exc
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download produced no recbole wheel in {tmp}")
        wheel = wheels[0]
        extracted = []
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if not name.startswith(WHEEL_FOLDER) or name.endswith("/"):
                    continue
                target = data_dir / Path(name).name  # flat: no path from the archive is trusted
                target.write_bytes(zf.read(name))
                extracted.append(target.name)
        say(f"ML-100K: extracted {', '.join(sorted(extracted))} from {wheel.name} "
            f"(sha256 {_sha256(wheel)}) into {data_dir}")
    if not (data_dir / INTER_FILE).is_file() or not (data_dir / ITEM_FILE).is_file():
        raise RuntimeError(f"{wheel.name} has no {WHEEL_FOLDER}{INTER_FILE} / {ITEM_FILE}")
    return data_dir


# --------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class Movie:
    id: int
    title: str
    year: int | None
    genres: tuple[str, ...]

    @property
    def external_id(self) -> str:
        return f"{ITEM_PREFIX}{self.id}"

    @property
    def text(self) -> str:
        """Text for the service's encoders: title, year, genres."""
        year = f" ({self.year})" if self.year is not None else ""
        parts = [f"{self.title}{year}."]
        if self.genres:
            parts.append(f"Genres: {', '.join(self.genres)}.")
        if self.year is not None:
            parts.append(f"Released {self.year}.")
        return " ".join(parts)


@dataclass(frozen=True)
class Ratings:
    """All ratings in file order (row i = data line i of ml-100k.inter, header excluded)."""

    user: np.ndarray  # int64 raw MovieLens user id
    item: np.ndarray  # int64 raw MovieLens item id
    rating: np.ndarray  # float32, 1..5
    timestamp: np.ndarray  # int64 Unix seconds

    def __len__(self) -> int:
        return len(self.user)


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines()
    header = [col.split(":", 1)[0] for col in lines[0].split("\t")]
    rows = [line.split("\t") for line in lines[1:] if line]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"{path.name} line {i + 2}: {len(row)} fields, expected {len(header)}")
    return header, rows


_TRAILING_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def read_items(path: Path) -> list[Movie]:
    """Parse ``ml-100k.item`` (see the module docstring for the cleaning)."""
    header, rows = _read_atomic(Path(path))
    col = {name: i for i, name in enumerate(header)}
    movies = []
    for row in rows:
        title = row[col["movie_title"]].strip()
        year_text = row[col["release_year"]].strip()
        year = int(year_text) if year_text.isdigit() else None
        if year is None:
            match = _TRAILING_YEAR.search(title)
            if match:
                year, title = int(match.group(1)), title[: match.start()].strip()
        if title.lower() in {"unkonwn", "unknown", ""}:
            title = "unknown"
        genres = tuple(g for g in row[col["class"]].split() if g != "unknown")
        movies.append(Movie(int(row[col["item_id"]]), title, year, genres))
    return movies


def read_ratings(path: Path) -> Ratings:
    """Parse ``ml-100k.inter`` into arrays, keeping file order (the split's tie-break)."""
    header, rows = _read_atomic(Path(path))
    col = {name: i for i, name in enumerate(header)}
    arr = np.asarray(rows, dtype=object)
    return Ratings(
        user=arr[:, col["user_id"]].astype(np.int64),
        item=arr[:, col["item_id"]].astype(np.int64),
        rating=arr[:, col["rating"]].astype(np.float32),
        timestamp=arr[:, col["timestamp"]].astype(np.float64).astype(np.int64),
    )


def load_ml100k(data_dir: Path = DEFAULT_DATA_DIR, *, download: bool = True) -> tuple[list[Movie], Ratings]:
    """(movies sorted by id, ratings in file order); downloads first when ``download``."""
    data_dir = ensure_ml100k(data_dir) if download else Path(data_dir)
    movies = sorted(read_items(data_dir / ITEM_FILE), key=lambda m: m.id)
    return movies, read_ratings(data_dir / INTER_FILE)


# --------------------------------------------------------------------------------------------------
# Export in the service's import formats


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def catalog_record(movie: Movie, kind: str = "product") -> dict:
    """One line of the service's item JSONL (fields of ``service.store.records.parse_item``)."""
    return {
        "id": movie.external_id,
        "kind": kind,
        "title": movie.title,
        "text": movie.text,
        "category": movie.genres[0] if movie.genres else None,
        "tags": list(movie.genres),
        "attributes": {"year": movie.year} if movie.year is not None else {},
    }


def to_catalog(
    movies: Sequence[Movie],
    ratings: Ratings,
    out_dir: Path,
    *,
    rows: np.ndarray | Sequence[int] | None = None,
    kind: str = "product",
) -> tuple[Path, Path]:
    """Write ``items.jsonl`` and ``events.csv`` for ``recsys import`` into ``out_dir``.

    Events: ``event_id,user_id,item_id,type,value,timestamp`` with ``event_id`` ``ml100k-<row>``
    (row = index in ``ratings``), ``user_id`` ``u<id>``, ``item_id`` ``ml-<id>``, type ``rating``,
    value the rating, timestamp ISO 8601 UTC. ``rows`` selects which ratings to write (e.g. only
    the fitting rows of a split, mapped with :meth:`MovieLensData.rating_rows`); default all.
    Local files only: the data may not be redistributed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items_path, events_path = out_dir / "items.jsonl", out_dir / "events.csv"
    with open(items_path, "w", encoding="utf-8") as fh:
        for movie in movies:
            fh.write(json.dumps(catalog_record(movie, kind), ensure_ascii=False) + "\n")
    selected = np.arange(len(ratings)) if rows is None else np.asarray(rows, dtype=np.int64)
    with open(events_path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_id", "user_id", "item_id", "type", "value", "timestamp"])
        for r in selected.tolist():
            value = float(ratings.rating[r])
            writer.writerow([
                f"ml100k-{r}",
                f"{USER_PREFIX}{int(ratings.user[r])}",
                f"{ITEM_PREFIX}{int(ratings.item[r])}",
                "rating",
                int(value) if value.is_integer() else value,
                _iso(int(ratings.timestamp[r])),
            ])
    return items_path, events_path


# --------------------------------------------------------------------------------------------------
# The benchmark split


@dataclass
class MovieLensData:
    """Positives of ML-100K, indexed 0..n-1, with the hold-out split and CSR matrices.

    Users are matrix rows (``user_ids[row]`` = raw MovieLens id), items columns
    (``item_ids[col]`` = raw id, ``movies[col]`` its metadata; every catalog movie has a column). ``pos_*`` arrays are the
    positive ratings in file order; ``split`` indexes them and its truth dicts use row/column
    indices. ``train`` (train rows) is what tuning fits on, ``train_valid`` the final fit.
    Matrices are binary float32 (users x items).

    The fitting period mirrors the service's evaluator (``Evaluator.world``): for an evaluated
    user it ends at the time of their first held-out positive of the phase (:meth:`cutoffs`), so
    ``train`` / ``train_valid`` leave out the user's fitting positives tied in time with it, and
    :meth:`excluded` is every item the user rated (any value) strictly before it, the set the
    evaluator's ``history`` calls ``consumed``.
    """

    movies: list[Movie]
    ratings: Ratings
    user_ids: np.ndarray
    item_ids: np.ndarray
    pos_rows: np.ndarray  # index into ``ratings`` of every positive, in file order
    pos_user: np.ndarray  # matrix row of each positive
    pos_item: np.ndarray  # matrix column of each positive
    pos_time: np.ndarray
    split: Split
    train: sp.csr_matrix
    train_valid: sp.csr_matrix
    threshold: float = POSITIVE_THRESHOLD
    info: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def fit_matrix(self, phase: str) -> sp.csr_matrix:
        """Matrix to fit on before scoring ``phase``: train for "valid", train+valid for "test"."""
        return {"valid": self.train, "test": self.train_valid}[phase]

    def popularity(self, phase: str) -> np.ndarray:
        """Per-item positive count in the fitting data of ``phase`` (for popularity bias)."""
        return np.asarray(self.fit_matrix(phase).getnnz(axis=0), dtype=np.float64).ravel()

    def cutoffs(self, phase: str) -> np.ndarray:
        """Per user row: when the fitting period of ``phase`` ends (inf for users not evaluated).

        The time of the user's first held-out positive: validation and test rows for "valid",
        test rows for "test" (what ``Evaluator.held_rows`` holds out).
        """
        return _cutoffs(self.split, self.pos_user, self.pos_time, self.n_users, phase)

    def excluded(self, phase: str) -> sp.csr_matrix:
        """Items never recommended to a user when scoring ``phase``: every item the user rated
        (any rating value) strictly before :meth:`cutoffs` (all their ratings when not evaluated).

        Binary CSR (users x items), shared by every baseline; for evaluated users its rows equal
        the ``consumed`` sets of ``Evaluator.history`` (``exclude_seen_types`` includes ``rating``).
        """
        key = ("excluded", phase)
        if key not in self._cache:
            col_of = {int(i): c for c, i in enumerate(self.item_ids.tolist())}
            users = np.searchsorted(self.user_ids, self.ratings.user).astype(np.int64)
            items = np.asarray([col_of[int(i)] for i in self.ratings.item.tolist()], dtype=np.int64)
            keep = self.ratings.timestamp < self.cutoffs(phase)[users]
            self._cache[key] = _csr(users[keep], items[keep], (self.n_users, self.n_items))
        return self._cache[key]

    def excluded_items(self, phase: str, user: int) -> np.ndarray:
        """Columns of :meth:`excluded` for one user row (sorted)."""
        m = self.excluded(phase)
        return m.indices[m.indptr[user] : m.indptr[user + 1]]

    def rating_rows(self, split_idx: np.ndarray) -> np.ndarray:
        """Map split indices (into the positives) to rows of ``ratings`` (e.g. for to_catalog)."""
        return self.pos_rows[np.asarray(split_idx, dtype=np.int64)]

    def user_external(self, row: int) -> str:
        return f"{USER_PREFIX}{int(self.user_ids[row])}"

    def item_external(self, col: int) -> str:
        return f"{ITEM_PREFIX}{int(self.item_ids[col])}"

    def item_index(self) -> dict[str, int]:
        """Service item id (``ml-<id>``) -> column."""
        return {self.item_external(c): c for c in range(self.n_items)}

    def user_index(self) -> dict[str, int]:
        """Service user id (``u<id>``) -> row."""
        return {self.user_external(r): r for r in range(self.n_users)}


def _csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def _cutoffs(split: Split, pos_user: np.ndarray, pos_time: np.ndarray, n_users: int, phase: str) -> np.ndarray:
    if phase not in ("valid", "test"):
        raise ValueError(f"phase must be 'valid' or 'test', not {phase!r}")
    held = split.test_idx if phase == "test" else np.concatenate([split.valid_idx, split.test_idx])
    held = np.asarray(held, dtype=np.int64)
    cut = np.full(n_users, np.inf)
    np.minimum.at(cut, pos_user[held], pos_time[held].astype(np.float64))
    return cut


def load_split(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    n_test: int = 2,
    n_valid: int = 2,
    min_train: int = 1,
    threshold: float = POSITIVE_THRESHOLD,
    download: bool = True,
) -> MovieLensData:
    """Load ML-100K and build the benchmark split (defaults: the reported configuration)."""
    movies, ratings = load_ml100k(data_dir, download=download)
    item_ids = np.asarray([m.id for m in movies], dtype=np.int64)
    col_of = {int(i): c for c, i in enumerate(item_ids.tolist())}
    pos_rows = np.flatnonzero(ratings.rating >= threshold)
    user_ids = np.unique(ratings.user)
    pos_user = np.searchsorted(user_ids, ratings.user[pos_rows]).astype(np.int64)
    pos_item = np.asarray([col_of[int(i)] for i in ratings.item[pos_rows]], dtype=np.int64)
    pos_time = ratings.timestamp[pos_rows]
    if len(set(zip(pos_user.tolist(), pos_item.tolist()))) != len(pos_rows):
        raise ValueError("repeated (user, item) positives; deduplicate before splitting")
    split = holdout_split(pos_user, pos_item, pos_time, n_test=n_test, n_valid=n_valid, min_train=min_train)
    shape = (len(user_ids), len(item_ids))
    # Fitting positives: the phase's fitting rows dated strictly before the user's first held-out
    # positive (the evaluator's world drops the user's events from that time on, ties included).
    fit_rows = {}
    for phase, idx in (("valid", split.train_idx), ("test", split.train_valid_idx)):
        idx = np.asarray(idx, dtype=np.int64)
        cut = _cutoffs(split, pos_user, pos_time, len(user_ids), phase)
        fit_rows[phase] = idx[pos_time[idx] < cut[pos_user[idx]]]
    train = _csr(pos_user[fit_rows["valid"]], pos_item[fit_rows["valid"]], shape)
    train_valid = _csr(pos_user[fit_rows["test"]], pos_item[fit_rows["test"]], shape)
    inter = Path(data_dir) / INTER_FILE
    info = {
        "source": f"{RECBOLE_REQUIREMENT} wheel, {WHEEL_FOLDER}",
        "inter_sha256": _sha256(inter) if inter.is_file() else None,
        "n_ratings": len(ratings),
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "positive_threshold": threshold,
        "n_positives": int(len(pos_rows)),
        "n_test": n_test,
        "n_valid": n_valid,
        "min_train": min_train,
        "n_eval_users": int(len(split.users)),
        "n_train": int(len(split.train_idx)),
        "n_valid_rows": int(len(split.valid_idx)),
        "n_test_rows": int(len(split.test_idx)),
        # Fitting positives tied in time with the user's first held-out positive (left out).
        "n_train_tied_dropped": int(len(split.train_idx) - len(fit_rows["valid"])),
        "n_train_valid_tied_dropped": int(len(split.train_valid_idx) - len(fit_rows["test"])),
        "n_fit_valid": int(train.nnz),
        "n_fit_test": int(train_valid.nnz),
        "split": SPLIT_DESCRIPTION,
    }
    return MovieLensData(
        movies=movies, ratings=ratings, user_ids=user_ids, item_ids=item_ids, pos_rows=pos_rows,
        pos_user=pos_user, pos_item=pos_item, pos_time=pos_time, split=split, train=train,
        train_valid=train_valid, threshold=threshold, info=info,
    )


def main() -> None:
    """Download (once) and split the data; print what the split holds."""
    data = load_split()
    print(json.dumps(data.info, indent=2))


if __name__ == "__main__":
    main()

"""The offline rebuild: read → embed → build index → verify → train → publish, with injected stages.

Every stage is a callable passed to :class:`Pipeline` (defaults below), timed separately and
shown with a progress bar. A rebuild reads only ids and content hashes of live items, looks their
vectors up in the cache (content hash, encoder) and embeds only the misses; deleted items are
not read, so they leave the index. The new version is written into a private folder and moved
into place in one rename, then published by swapping the ``CURRENT`` pointer: a failed, killed or
interrupted build never touches the published version.

The training stage (:mod:`indexer.train`) fits the collaborative model into the same version;
its quality gate can refuse a version (kept unpublished, ``status: refused``) unless forced.
``recsys-indexer train`` runs that stage alone on a copy of the published version's spaces.

With ``ray_address`` set, the text misses are embedded by Ray actors (:mod:`indexer.ray_embed`)
and the collaborative fits' heavy products run as Ray tasks (:mod:`indexer.ray_train`); the rest
of the rebuild, CLIP images included, stays in this process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from indexer.finetune_clip_stage import finetune_clip_space
from indexer.finetune_stage import FinetuneResult, finetune_text, read_behaviour
from indexer.probes import probe_texts
from indexer.train import TrainResult, train_model
from indexer.vector_cache import VectorCache
from service.vectors import artifacts, object_store
from service.vectors.object_store import RemotePointer, RemoteStore
from service.store.db import database_utcnow, session_scope
from service.vectors.encoders import EncoderUnavailable
from service.vectors.index_store import load_space
from service.store.images import ImageStore, is_key
from service.store.events import event_watermark
from service.store.query_log import recent_queries
from service.store.items import chunked, embedding_texts
from service.store.models import IndexVersion, Item, utcnow
from service.settings import Settings

log = logging.getLogger("recsys.indexer")

LOCK_FILE = ".build.lock"
FINETUNE_DIR = "finetune"  # fine-tuning checkpoints (a killed fine-tune resumes from them)
FINETUNE_ATTEMPT = "finetune-last.json"  # the last fine-tune's watermark and outcome (schedules read it)
LEGACY_IMAGE = "legacy image location (not in the image store): run `recsys images migrate`"
ENCODER_SECTIONS = artifacts.ENCODER_SECTIONS  # the manifest section (and folder) of each space's fine-tune


class BuildError(RuntimeError):
    """The build failed; the published version is unchanged."""


class BuildLocked(BuildError):
    """Another build holds the lock."""


def failed_stage(exc: BaseException) -> str | None:
    """The pipeline stage an exception (or the one it was raised from) escaped from, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        stage = getattr(exc, "build_stage", None)
        if stage:
            return stage
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass(frozen=True)
class ItemRow:
    id: int
    content_hash: str
    image_location: str | None


@dataclass
class SpaceVectors:
    """One space's embedded items, in item-id order."""

    space: str
    encoder: dict[str, Any]
    ids: np.ndarray
    vectors: np.ndarray
    embedded: int = 0
    cached: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    # Query-like probe vectors for the recall check: called with the most to return, only when
    # the index is approximate (a Flat index never pays for them). None: catalog vectors only.
    probes: Callable[[int], np.ndarray | None] | None = None


@dataclass
class EncoderChoice:
    """The encoder a space is built with, when it is a fine-tune rather than the pretrained one
    (``text_model``, or ``clip_model`` + ``clip_pretrained``)."""

    encoder: Any | None  # a TextEncoder or ClipEncoder (None: loaded from ``folder`` when needed)
    folder: Path  # its folder (sentence-transformers', or the CLIP weights), copied into the version
    section: dict[str, Any]  # the manifest's section for it (files are added when copied)
    refused: str | None = None  # why the fine-tuning gate refused it (the version stays unpublished)


@dataclass
class BuildReport:
    status: str  # "published", "ready" (built, not published), "refused" (by the quality gate) or "up-to-date"
    version: str | None
    manifest: dict[str, Any] | None
    timings: dict[str, float]
    message: str = ""


# --- the spaces -------------------------------------------------------------------------------


def _text_inputs(session: Session, ids: list[int]) -> list[str]:
    """Title and text of each item: what the text space embeds."""
    found = embedding_texts(session, ids)
    return [found[i] for i in ids]


# Items per text-embedding partition. Every embedder (this process, Ray actors) encodes the misses
# in the same partitions: sentence-transformers sorts each call's texts by length and pads per
# batch, so a text's vector depends, in its last bits, on the call it was in (measured: up to
# 8.6e-8 apart between one call and partitions of 256). Same partitions, same bits.
EMBED_PARTITION = 1024


def partitions(count: int, size: int | None = None) -> list[slice]:
    """Consecutive slices of ``size`` (default :data:`EMBED_PARTITION`) covering ``range(count)``."""
    size = size or EMBED_PARTITION
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def embed_text_partition(session: Session, ids: list[int], encoder: Any, *, progress: bool = False) -> np.ndarray:
    """Vectors of one partition of items (float32, in ``ids`` order): one ``encode`` call."""
    return np.asarray(encoder.encode(_text_inputs(session, ids), progress=progress), dtype=np.float32)


def embed_texts(ids: list[int], encoder: Any, *, session: Session, progress: bool = False) -> np.ndarray:
    """The text embedder of this process: ``ids`` (in id order) partition by partition."""
    out = np.zeros((len(ids), encoder.dim), dtype=np.float32)
    for part in partitions(len(ids)):
        out[part] = embed_text_partition(session, ids[part], encoder, progress=progress)
    return out


def probe_text_sample(session_factory: sessionmaker[Session], ids: np.ndarray, count: int, *, seed: int = 0) -> list[str]:
    """``probe_texts`` of a seeded sample of up to ``count`` of the items ``ids``."""
    rng = np.random.default_rng(seed)
    chosen = [int(ids[i]) for i in np.sort(rng.choice(len(ids), min(count, len(ids)), replace=False))]
    found: dict[int, tuple[str, str]] = {}
    with session_scope(session_factory) as session:
        for chunk in chunked(chosen):
            stmt = select(Item.id, Item.title, Item.text).where(Item.id.in_(chunk))
            found.update({pk: (title, text) for pk, title, text in session.execute(stmt)})
    return probe_texts([found[i] for i in chosen if i in found], seed)


def recall_probe_texts(session_factory: sessionmaker[Session], ids: np.ndarray, count: int, *,
                       seed: int = 0) -> tuple[list[str], dict[str, int]]:
    """Up to ``count`` texts that look like real traffic: the most recent logged search queries
    (``query_log_size``), filled up with query-like texts of a seeded sample of items when the
    log holds fewer; and how many came from each."""
    with session_scope(session_factory) as session:
        logged = recent_queries(session, count)
    derived = probe_text_sample(session_factory, ids, count - len(logged), seed=seed) if len(logged) < count else []
    return logged + derived, {"logged_queries": len(logged), "catalog_derived": len(derived)}


class TextProbes:
    """Probe vectors for the text space's recall check (called with the most to return), embedded
    by ``encoder``; ``sources`` says where the last call's texts came from."""

    def __init__(self, session_factory: sessionmaker[Session], encoder: Any, ids: np.ndarray, *, seed: int = 0,
                 progress: bool = False):
        self.session_factory, self.encoder, self.ids, self.seed, self.progress = (
            session_factory, encoder, ids, seed, progress)
        self.sources: dict[str, int] = {}

    def __call__(self, count: int) -> np.ndarray | None:
        texts, self.sources = recall_probe_texts(self.session_factory, self.ids, count, seed=self.seed)
        if not texts:
            return None
        log.info("text: embedding %d probes for the recall check (%s)", len(texts), self.sources)
        return np.asarray(self.encoder.encode(texts, progress=self.progress), dtype=np.float32)


def space_members(space: str, rows: list[ItemRow]) -> list[ItemRow]:
    """Items that belong in a space: every item for text, items with an image for CLIP."""
    if space == "text":
        return rows
    return [r for r in rows if r.image_location]


def space_settings(space: str, settings: Settings, finetuned: str | None = None) -> dict[str, Any]:
    """The settings that decide a space's vectors and index (part of its fingerprint); ``finetuned``:
    the revision of the fine-tuned encoder the space is built with."""
    common = {"recall_floor": settings.recall_floor, "memory_budget_mb": settings.index_memory_budget_mb,
              **({"finetuned": finetuned} if finetuned else {})}
    if space == "text":
        # The query backend decides what the version carries besides the index (query_encoder/).
        return {"model": settings.text_model, "query_backend": settings.query_backend, **common}
    return {"model": settings.clip_model, "pretrained": settings.clip_pretrained, "enabled": settings.clip_enabled, **common}


def fingerprint(space: str, settings: Settings, rows: list[ItemRow], finetuned: str | None = None) -> str:
    """Digest of what a space would be built from: equal digests mean nothing to rebuild."""
    h = hashlib.sha256(json.dumps(space_settings(space, settings, finetuned), sort_keys=True).encode())
    for r in space_members(space, rows):
        h.update(f"{r.id}:{r.content_hash}\n".encode())
    return h.hexdigest()


# --- default stages ---------------------------------------------------------------------------


def read_items(session: Session) -> list[ItemRow]:
    """Read stage: id, content hash and image location of every live item, by id."""
    stmt = select(Item.id, Item.content_hash, Item.image_location).where(Item.deleted_at.is_(None)).order_by(Item.id)
    return [ItemRow(*row) for row in session.execute(stmt)]


def embed_space(
    space: str, rows: list[ItemRow], encoder: Any, *, session: Session, cache_root: Path,
    full: bool, progress: bool, image_store: ImageStore | None = None,
    text_embedder: Callable[..., np.ndarray] | None = None,
) -> SpaceVectors:
    """Embed stage: cached vectors for unchanged items, the encoder for the rest.

    Images are read from ``image_store`` only (required for the clip space); an item whose
    location is not a store key (legacy path or URL) is never read: it is a per-item error.
    ``text_embedder``: embeds the text misses, called as :func:`embed_texts` (the default; a Ray
    cluster's is :class:`indexer.ray_embed.RayTextEmbedder`); images are always embedded here.
    """
    if space != "text" and image_store is None:
        raise ValueError("embed_space: the clip space needs the image store")
    members = space_members(space, rows)
    info = {"name": encoder.name, "revision": encoder.revision, "dim": int(encoder.dim)}
    cache = VectorCache(cache_root, space, encoder.name, encoder.revision, encoder.dim)
    hashes = [r.content_hash for r in members]
    vectors = np.zeros((len(members), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(members), dtype=bool)
    if not full:
        found, cached_vectors = cache.lookup(hashes)
        vectors[found] = cached_vectors
        ok[found] = True
    if space != "text":
        # A vector cached from a legacy location was read from outside the store: not reused.
        ok &= np.array([is_key(r.image_location) for r in members], dtype=bool)
    misses = np.flatnonzero(~ok)
    errors: dict[int, str] = {}
    if len(misses):
        log.info("%s: embedding %d of %d items (%d cached)", space, len(misses), len(members), len(members) - len(misses))
        if space == "text":
            embed = text_embedder or embed_texts
            vectors[misses] = embed([members[i].id for i in misses], encoder, session=session, progress=progress)
            ok[misses] = True
        else:
            sources: list[Path] = []
            positions: list[int] = []
            for i in misses:
                location = members[i].image_location
                if not is_key(location):
                    errors[members[i].id] = LEGACY_IMAGE
                    continue
                path = image_store.path_of(location)
                if not image_store.exists(location):  # fetched from a shared image store when set
                    errors[members[i].id] = f"image {location} is missing from the image store"
                    continue
                sources.append(path)
                positions.append(int(i))
            got, ok_idx, bad = encoder.encode_images(sources, progress=progress)
            placed = np.asarray(positions, dtype=np.int64)[np.asarray(ok_idx, dtype=np.int64)]
            vectors[placed] = got
            ok[placed] = True
            errors.update({members[positions[i]].id: reason for i, reason in bad.items()})
            for pk, reason in list(errors.items())[:20]:
                log.warning("clip: item %d skipped: %s", pk, reason)
            if len(errors) > 20:
                log.warning("clip: %d more items skipped (see the manifest)", len(errors) - 20)
    keep = np.flatnonzero(ok)
    cache.replace([hashes[i] for i in keep], vectors[keep])
    return SpaceVectors(
        space=space,
        encoder=info,
        ids=np.array([members[i].id for i in keep], dtype=np.int64),
        vectors=vectors[keep],
        embedded=len(misses) - len(errors),
        cached=len(members) - len(misses),
        errors=errors,
    )


def build_space_index(sv: SpaceVectors, folder: Path, settings: Settings, *, progress: bool) -> dict[str, Any]:
    """Index stage: choose, build and tune the FAISS index, write it with the id map.

    An approximate index is tuned on catalog vectors and, when ``sv.probes`` is set (the text
    space), on up to ``recall_sample`` query-like probes as well; ``recall_at_10`` is the lower.
    CLIP has no probes (its queries are texts of another tower, with no catalog texts to derive
    them from): it is tuned on catalog vectors only.
    """
    from indexer.index_build import build_index, tune_search_params
    from indexer.index_choice import choose_index
    from service.vectors.vector_index import write_index

    spec = choose_index(len(sv.ids), sv.vectors.shape[1], settings.index_memory_budget_mb)
    log.info("%s: %d vectors -> %s", sv.space, len(sv.ids), spec.factory_key)
    index = build_index(sv.vectors, spec, progress=progress)
    probes = None
    if spec.factory_key == "Flat":
        probe_note = "none: exact Flat index"
    elif sv.probes is None:
        probe_note = "none for this space: catalog vectors only"
    else:
        probes = sv.probes(settings.recall_sample)
        sources = getattr(sv.probes, "sources", None)  # TextProbes says where its texts came from
        derived = "query-like texts (titles, text spans, title prefixes)"
        if probes is None:
            probe_note = "none could be made"
        elif sources:
            probe_note = f"{sources['logged_queries']} logged search queries + {sources['catalog_derived']} {derived}"
        else:
            probe_note = derived
    tuned = tune_search_params(index, sv.vectors, spec, floor=settings.recall_floor, sample=settings.recall_sample,
                               probes=probes)
    folder.mkdir(parents=True, exist_ok=True)
    write_index(index, folder / artifacts.INDEX_FILE)
    np.save(folder / artifacts.IDS_FILE, sv.ids)
    # Exact vectors beside the index: "more like this" and user profiles need them, and a
    # compressed index (PQ) cannot give them back.
    np.save(folder / artifacts.VECTORS_FILE, np.ascontiguousarray(sv.vectors, dtype=np.float32))
    return {
        "index_key": spec.factory_key,
        "metric": spec.metric,
        "search_params": tuned.params,
        "recall_at_10": tuned.recall,
        "recall_catalog": tuned.recall_catalog,
        "recall_probes": tuned.recall_probes,
        "recall_sample": min(settings.recall_sample, len(sv.ids)),
        "probe_count": tuned.probe_count,
        "probes": probe_note,
        "tuning": [{"params": p, "recall": r, "recall_catalog": c, "recall_probes": q}
                   for (p, r), (c, q) in zip(tuned.tried, tuned.tried_detail)],
        "memory_bytes_estimate": spec.memory_bytes,
    }


def verify_space(folder: Path, sv: SpaceVectors) -> None:
    """Verify stage: the written index loads, holds every vector, and finds stored items."""
    from service.vectors.vector_index import read_index, search

    index = read_index(folder / artifacts.INDEX_FILE)
    ids = np.load(folder / artifacts.IDS_FILE, mmap_mode="r")
    if index.ntotal != len(ids) or index.d != sv.vectors.shape[1]:
        raise BuildError(f"{sv.space}: index holds {index.ntotal} x {index.d}, expected {len(ids)} x {sv.vectors.shape[1]}")
    probe = np.linspace(0, len(ids) - 1, num=min(len(ids), 20)).astype(np.int64)
    scores, found = search(index, sv.vectors[probe], min(10, len(ids)), None)
    own = np.einsum("ij,ij->i", sv.vectors[probe], sv.vectors[probe])

    def tied(row: np.ndarray, self_score: float) -> bool:
        # Ten or more identical vectors (one placeholder picture on many items) tie for the whole
        # top 10: which copies come back is arbitrary, so finding its own score there counts.
        return bool(row[-1] >= row[0] - 1e-5 and abs(row[0] - self_score) <= 1e-3 * max(1.0, abs(self_score)))

    hits = sum(int(p in row or tied(row_scores, s)) for p, row, row_scores, s in zip(probe, found, scores, own))
    if hits < 0.8 * len(probe):
        raise BuildError(f"{sv.space}: written index finds only {hits} of {len(probe)} stored vectors among their own top-10")


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """Hold the build lock: one build at a time, and gc leaves a running build's folder alone.

    Raises:
        BuildLocked: another process holds it.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BuildLocked(f"another build holds {index_dir / LOCK_FILE}") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_running(index_dir: Path) -> bool:
    """Whether some process holds the build lock now (tested without waiting, creating nothing).

    Takes a shared lock for an instant: a build starting in that instant exits 75 (try later).
    """
    try:
        fd = os.open(Path(index_dir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False  # build_lock creates the file before locking it: never locked
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --- the pipeline -----------------------------------------------------------------------------


class Pipeline:
    """One rebuild. Stages are injectable (tests slow them down, make them fail, or count calls)."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        load_text_encoder: Callable[[Settings], Any] | None = None,
        load_clip_encoder: Callable[[Settings], Any] | None = None,
        reader: Callable[[Session], list[ItemRow]] = read_items,
        embedder: Callable[..., SpaceVectors] = embed_space,
        index_builder: Callable[..., dict[str, Any]] = build_space_index,
        verifier: Callable[[Path, SpaceVectors], None] = verify_space,
        trainer: Callable[..., TrainResult] | None = None,
        finetuner: Callable[..., FinetuneResult] | None = None,
        clip_finetuner: Callable[..., FinetuneResult] = finetune_clip_space,
        progress: bool = False,
    ):
        if load_text_encoder is None or load_clip_encoder is None:
            from service.vectors import clip_encoder, text_encoder

            load_text_encoder = load_text_encoder or text_encoder.load_text_encoder
            load_clip_encoder = load_clip_encoder or clip_encoder.load_clip_encoder
        self.settings = settings
        self.session_factory = session_factory
        self.cluster = None  # the Ray cluster (settings.ray_address): connected on first use, closed after a run
        if settings.ray_address:
            from indexer import ray_embed, ray_train
            from indexer.ray_cluster import LazyCluster

            self.cluster = LazyCluster(settings.ray_address)
            log.info("rebuild on Ray (%s): text embedding and collaborative fits run on the cluster; "
                     "CLIP images are embedded in this process", settings.ray_address)
            if embedder is embed_space:  # an injected stage stays as given
                on_ray = ray_embed.RayTextEmbedder(settings, self.cluster)
                embedder = functools.partial(embed_space, text_embedder=on_ray)
            trainer = trainer or functools.partial(train_model, fit=ray_train.RayFit(self.cluster))
            if finetuner is None:  # data-parallel on the cluster's GPUs when it has two or more
                from indexer.ray_finetune import ClusterFit

                finetuner = functools.partial(finetune_text, fit=ClusterFit(self.cluster, settings.ray_workers))
        self.loaders = {"text": load_text_encoder, "clip": load_clip_encoder}
        self.reader, self.embedder, self.index_builder, self.verifier = reader, embedder, index_builder, verifier
        self.trainer = trainer or train_model
        self.finetuner = finetuner or finetune_text
        self.clip_finetuner = clip_finetuner
        self.progress = progress
        self.index_dir = settings.index_path
        # With an artifact store, index_dir is this host's copy: synced before each build, and a
        # publish goes to the store (compare-and-swap against the pointer read at the start).
        self.remote = RemoteStore.from_settings(settings)
        self.expected: RemotePointer | None = None
        self.image_store = ImageStore.from_settings(settings)
        self.timings: dict[str, float] = {}
        self.failed_stage: str | None = None  # set when run() fails: the stage it failed in (or None)

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """Remember the step an exception escapes from, so the error can say where it happened."""
        try:
            yield
        except BaseException as exc:
            if getattr(exc, "build_stage", None) is None:  # the innermost step names it
                with contextlib.suppress(AttributeError):  # an exception type without __dict__
                    exc.build_stage = name  # type: ignore[attr-defined]
            raise

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        start = time.perf_counter()
        try:
            with self._step(name):
                yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)
            log.info("stage %s done in %.2f s", name, self.timings[name])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The build lock, then this host's index directory brought in step with the artifact store."""
        with build_lock(self.index_dir):
            self.expected = self._pull_published()
            yield

    def _pull_published(self) -> RemotePointer | None:
        """With an artifact store: read its pointer (what a publish will compare against) and make
        the version it names this host's ``CURRENT`` (fetched when missing), so fingerprints, the
        inherited encoder and the published model are the store's, whichever host built them."""
        if self.remote is None:
            return None
        with self._step("sync"):
            try:
                pointer = self.remote.read_pointer()
            except Exception as exc:  # noqa: BLE001 - any client error: the store cannot be reached
                raise BuildError(f"artifact store {self.remote.url} unreachable: {type(exc).__name__}: {exc}") from exc
            wanted = pointer.version
            if pointer.pointer.error:
                log.warning("artifact store %s: %s (a publish replaces it)", self.remote.url, pointer.pointer.error)
            if wanted and artifacts.current_version(self.index_dir) != wanted:
                try:
                    if not artifacts.version_dir(self.index_dir, wanted).is_dir():
                        self.remote.download(wanted, self.index_dir)
                    artifacts.set_current(self.index_dir, wanted)
                except artifacts.ArtifactError as exc:  # the build still works, from scratch
                    log.error("published version %s in %s is unusable here: %s", wanted, self.remote.url, exc)
        return pointer

    def run(self, *, full: bool = False, force: bool = False, publish: bool = True) -> BuildReport:
        """Rebuild (incremental unless ``full``); skip when nothing changed unless ``force``.

        Raises:
            BuildError: any stage failed (message says which and why); nothing was published.
            Other exceptions of a stage pass through unchanged, with the stage in
            :func:`failed_stage` (and ``self.failed_stage``).
        """
        self.timings, self.failed_stage = {}, None
        try:
            return self._run(full=full, force=force, publish=publish)
        except BaseException as exc:
            self.failed_stage = failed_stage(exc)
            raise
        finally:
            self._close_cluster()

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    def _run(self, *, full: bool, force: bool, publish: bool) -> BuildReport:
        started = time.perf_counter()
        with self._locked():
            if self.settings.finetune_on_rebuild:
                return self._finetune_locked(force=force, publish=publish, started=started, full=full)
            return self._run_locked(full=full, force=force, publish=publish, started=started)

    def _run_locked(self, *, full: bool, force: bool, publish: bool, started: float,
                    choices: dict[str, EncoderChoice] | None = None) -> BuildReport:
        """The build, with the lock held; ``choices``: fine-tuned encoders to build spaces with
        (default for each space: the published version's fine-tune when it was made from the
        configured pretrained model, else that model)."""
        with self._stage("read"), session_scope(self.session_factory) as session:
            read_at = database_utcnow(session)  # the clock fresh vectors are stamped with, whichever host
            rows = self.reader(session)
        current = artifacts.current_version(self.index_dir)
        chosen = {s: (choices or {}).get(s) or self._inherited(current, s) for s in artifacts.SPACES}
        prints = {s: fingerprint(s, self.settings, rows, c.section["revision"] if c else None)
                  for s, c in chosen.items()}
        if current and not (full or force):
            try:
                old = artifacts.read_manifest(artifacts.version_dir(self.index_dir, current))
            except artifacts.ArtifactError:
                old = None
            if old and old.get("fingerprints") == prints:
                msg = f"nothing changed since version {current}: no rebuild (use --force to build anyway)"
                log.info(msg)
                self.timings["total"] = round(time.perf_counter() - started, 4)
                return BuildReport("up-to-date", current, old, dict(self.timings), msg)
        version, building = self._new_version()
        try:
            with self._step("start"):
                self._start(version, building)
            manifest = self._build(version, building, rows, prints, full=full, choices=chosen)
            # Writes after this instant are not in the version: the service keeps them in its delta.
            manifest["read_at"] = read_at.isoformat() + "Z"
            refused_by = {ENCODER_SECTIONS[s]: c.refused for s, c in chosen.items()
                          if c and c.refused and ENCODER_SECTIONS[s] in manifest}
            return self._train_and_finish(version, building, manifest, force=force, publish=publish,
                                          started=started, refused_by=refused_by)
        except BaseException as exc:  # KeyboardInterrupt and SystemExit too: clean up, then re-raise
            self._fail(version, building, exc)
            raise

    def train(self, *, force: bool = False, publish: bool = True) -> BuildReport:
        """``recsys-indexer train``: a new version with the published one's spaces and a new model.

        The spaces' files are hard-linked (copied where links fail), so this costs the training
        stage only. ``force`` publishes a model the quality gate refused.

        Raises:
            BuildError: nothing usable is published.
        """
        self.timings, self.failed_stage = {}, None
        started = time.perf_counter()
        try:
            with self._locked():
                current = artifacts.current_version(self.index_dir)
                if current is None:
                    raise BuildError("nothing is published yet: run `recsys-indexer build` first")
                source = artifacts.version_dir(self.index_dir, current)
                try:
                    old = artifacts.verify_version(source, checksums=False)
                except artifacts.ArtifactError as exc:
                    raise BuildError(f"the published version is unusable: {exc}") from exc
                version, building = self._new_version()
                try:
                    with self._step("start"):
                        self._start(version, building)
                        for space in old["spaces"]:
                            _link_tree(source / space, building / space)
                        # The fine-tuned encoders the spaces were built with, and the ONNX export.
                        for section in (*ENCODER_SECTIONS.values(), artifacts.QUERY_ENCODER_DIR):
                            if section in old:
                                _link_tree(source / section, building / section)
                    manifest = {k: v for k, v in old.items() if k not in ("behaviour", "timings")}
                    manifest.update(version=version, created_at=utcnow().isoformat() + "Z", spaces_from=current)
                    return self._train_and_finish(version, building, manifest, force=force, publish=publish,
                                                  started=started)
                except BaseException as exc:
                    self._fail(version, building, exc)
                    raise
        except BaseException as exc:
            self.failed_stage = failed_stage(exc)
            raise
        finally:
            self._close_cluster()

    def finetune(self, *, force: bool = False, publish: bool = True, full: bool = False) -> BuildReport:
        """``recsys-indexer finetune``: fine-tune the text encoder on behaviour, and the CLIP encoder
        when ``finetune_clip`` is on and the CLIP space is built; build a version with them.

        The version is published only when the fine-tuning gates and the model gate pass (``force``:
        anyway); refused, it stays unpublished with status "refused". With too little behaviour
        nothing is built (status "up-to-date", the message says why).

        Raises:
            BuildError: as :meth:`run`; nothing was published.
        """
        self.timings, self.failed_stage = {}, None
        started = time.perf_counter()
        try:
            with self._locked():
                return self._finetune_locked(force=force, publish=publish, started=started, full=full,
                                             build_anyway=False)
        except BaseException as exc:
            self.failed_stage = failed_stage(exc)
            raise
        finally:
            self._close_cluster()

    def _finetune_locked(self, *, force: bool, publish: bool, started: float, full: bool,
                         build_anyway: bool = True) -> BuildReport:
        """Fine-tune, then build with the result (lock held); ``build_anyway``: a scheduled rebuild
        still builds when there is nothing new to fine-tune on, and leaves a refused fine-tune out."""
        from service.vectors.text_encoder import load_text_encoder

        current = artifacts.current_version(self.index_dir)
        published = {s: self._published_choice(current, s) for s in artifacts.SPACES}
        with session_scope(self.session_factory) as session:
            watermark = event_watermark(session)
        attempt_file = self.index_dir / FINETUNE_ATTEMPT
        if build_anyway and not force:
            # A schedule fine-tunes again only once enough new behaviour arrived since the last
            # attempt, published or refused: a refused fine-tune is not retried every run.
            seen = [(c.section.get("watermark") or {}) for c in published.values() if c]
            with contextlib.suppress(OSError, ValueError):
                seen.append(json.loads(attempt_file.read_text()).get("watermark") or {})
            last = max([int(w.get("events", 0)) for w in seen] or [0])
            if watermark["events"] - last < self.settings.finetune_min_new_events:
                log.info("finetune: %d new events since the last fine-tune (finetune_min_new_events=%d): a plain "
                         "rebuild", watermark["events"] - last, self.settings.finetune_min_new_events)
                return self._run_locked(full=full, force=force, publish=publish, started=started)

        def load(path: Path | None, name: str | None = None) -> Any:
            if path is None:  # the pretrained base, to be trained: fp32 on every device
                return load_text_encoder(self.settings, training=True)
            return load_text_encoder(self.settings, path=path, name=name)

        work_dir = self.index_dir / FINETUNE_DIR
        with self._stage("finetune"):
            behaviour = read_behaviour(self.settings, self.session_factory)
            results = {"text": self.finetuner(
                self.settings, self.session_factory, published=self._encoder_for("text", published["text"]),
                embed=self._space_embedder("text"), load_encoder=load, work_dir=work_dir, progress=self.progress,
                behaviour=behaviour)}
        clip = self._finetune_clip(published["clip"], behaviour, work_dir / "clip")
        if clip is not None:
            results["clip"] = clip
        artifacts.write_json_atomic(attempt_file, {
            "watermark": watermark, "status": results["text"].status, "refused": results["text"].refused,
            **({"clip": {"status": clip.status, "refused": clip.refused}} if clip is not None else {}),
            "at": utcnow().isoformat() + "Z"})
        chosen = {}
        for space, result in results.items():
            if result.status == "skipped":
                continue
            if result.refused and build_anyway and not force:
                # The catalog's changes are published all the same, with the encoder in use.
                log.error("finetune: the %s encoder was refused by its gate (%s); building with the one in use",
                          space, result.refused)
                continue
            chosen[space] = EncoderChoice(result.encoder, result.model_dir, result.section, result.refused)
        if not chosen and not build_anyway:
            self.timings["total"] = round(time.perf_counter() - started, 4)
            return BuildReport("up-to-date", current, None, dict(self.timings),
                               "; ".join(r.message for r in results.values()))
        report = self._run_locked(full=full, force=force, publish=publish, started=started, choices=chosen)
        shutil.rmtree(work_dir, ignore_errors=True)  # the version holds the encoders now; checkpoints are spent
        return report

    def _finetune_clip(self, published: EncoderChoice | None, behaviour: Any, work_dir: Path) -> FinetuneResult | None:
        """The CLIP fine-tune (``finetune_clip``), when its encoder loads and items have images; else None."""
        from service.vectors.clip_encoder import load_clip_encoder

        if not (self.settings.finetune_clip and self.settings.clip_enabled):
            return None
        try:
            with self._stage("load:clip"):
                served = self._encoder_for("clip", published)
        except EncoderUnavailable as exc:
            log.info("finetune: the CLIP encoder is not fine-tuned: %s", exc)
            return None

        def load(path: Path | None, name: str | None = None) -> Any:
            if path is None:  # the pretrained weights (finetune_clip trains an fp32 copy of them)
                return self.loaders["clip"](self.settings)
            return load_clip_encoder(self.settings, path=path, name=name)

        with self._stage("finetune:clip"):
            return self.clip_finetuner(self.settings, self.session_factory, published=served,
                                       embed=self._space_embedder("clip"), load_encoder=load, work_dir=work_dir,
                                       image_store=self.image_store, progress=self.progress, behaviour=behaviour)

    def _space_embedder(self, space: str) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of a space's items under an encoder: the embed stage, with its cache (the
        build that follows reuses the fine-tuned encoder's vectors)."""
        def embed(encoder: Any) -> tuple[np.ndarray, np.ndarray]:
            with session_scope(self.session_factory) as session:
                sv = self.embedder(space, self.reader(session), encoder, session=session,
                                   cache_root=self.index_dir / "cache", full=False, progress=self.progress,
                                   image_store=self.image_store)
            return sv.ids, sv.vectors

        return embed

    def _published_choice(self, current: str | None, space: str) -> EncoderChoice | None:
        """The fine-tuned encoder the published version's ``space`` was built with (None: the pretrained one)."""
        if current is None:
            return None
        folder = artifacts.version_dir(self.index_dir, current)
        key = ENCODER_SECTIONS[space]
        try:
            section = artifacts.read_manifest(folder).get(key)
        except artifacts.ArtifactError:
            return None
        if not section:
            return None
        kept = {k: v for k, v in section.items() if k != "files"}
        kept.setdefault("inherited_from", current)
        return EncoderChoice(None, folder / key, kept)

    def _new_version(self) -> tuple[str, Path]:
        """A fresh version name and the private folder it is built in."""
        version = artifacts.new_version_name()
        return version, Path(self.index_dir) / f"{artifacts.BUILDING_PREFIX}{version}"

    def _start(self, version: str, building: Path) -> None:
        artifacts.start_version(self.index_dir, version)
        self._record(version, "building", building)

    def _train_and_finish(self, version: str, building: Path, manifest: dict[str, Any], *, force: bool,
                          publish: bool, started: float, refused_by: dict[str, str] | None = None) -> BuildReport:
        """Training stage, then write, move into place and publish (unless a gate refused: the
        model's, or a fine-tuning's: ``refused_by`` maps its manifest section to the reason)."""
        with self._stage("train"):
            text = manifest["spaces"].get("text")
            space = load_space(building / "text", "text", text) if text else None
            result = self.trainer(self.settings, self.session_factory, building, space=space,
                                  published=self._published_behaviour())
        manifest["behaviour"] = result.section
        refused_by = refused_by or {}
        labels = {artifacts.ENCODER_DIR: "fine-tuned text encoder", artifacts.CLIP_ENCODER_DIR: "fine-tuned CLIP encoder"}
        reasons = [f"{labels[key]}: {reason}" for key, reason in refused_by.items()]
        reasons += [result.refused] if result.refused else []
        refused = "; ".join(reasons) if reasons and not force else None
        if reasons and force:
            for section in [manifest[key] for key in refused_by] + ([result.section] if result.refused else []):
                section["gate"]["forced"] = True
            log.warning("quality gate overridden (--force): %s", "; ".join(reasons))
        manifest["timings"] = dict(self.timings)
        with self._step("finish"):
            artifacts.write_json_atomic(building / artifacts.MANIFEST, manifest)
            final = artifacts.finish_version(self.index_dir, building, version)
            self._record(version, "ready", final, manifest=manifest,
                         message=f"refused by the quality gate: {refused}" if refused else None)
        if publish and not refused:
            with self._stage("publish"):
                publish_version(self.settings, self.session_factory, version, expected=self.expected)
        self.timings["total"] = round(time.perf_counter() - started, 4)
        if refused:
            msg = (f"version {version} refused by the quality gate ({refused}); the published version is unchanged "
                   f"(publish it anyway with --force, or `recsys-indexer publish {version}`)")
            log.error(msg)
            return BuildReport("refused", version, manifest, dict(self.timings), msg)
        status = "published" if publish else "ready"
        return BuildReport(status, version, manifest, dict(self.timings), f"version {version} {status}")

    def _published_behaviour(self) -> dict[str, Any] | None:
        """The published version's model section (None: nothing published, or no model in it)."""
        current = artifacts.current_version(self.index_dir)
        if current is None:
            return None
        try:
            return artifacts.read_manifest(artifacts.version_dir(self.index_dir, current)).get("behaviour")
        except artifacts.ArtifactError:
            return None

    def _inherited(self, current: str | None, space: str) -> EncoderChoice | None:
        """The published version's fine-tuned encoder of ``space``, when it was made from the
        configured pretrained model (a plain rebuild keeps it; a changed setting starts again)."""
        choice = self._published_choice(current, space)
        if choice is None:
            return None
        base = {"model": self.settings.clip_model, "pretrained": self.settings.clip_pretrained} if space == "clip" \
            else self.settings.text_model
        if choice.section.get("base", {}).get("setting") != base or (space == "clip" and not self.settings.clip_enabled):
            return None
        return choice

    def _encoder_for(self, space: str, choice: EncoderChoice | None) -> Any:
        """The encoder ``space`` is built with: ``choice``'s fine-tune (loaded once), else the pretrained one."""
        if choice is None:
            return self.loaders[space](self.settings)
        if choice.encoder is None:
            name = choice.section["name"]
            if space == "text":
                from service.vectors.text_encoder import load_text_encoder

                choice.encoder = load_text_encoder(self.settings, path=choice.folder, name=name)
            else:
                from service.vectors.clip_encoder import load_clip_encoder

                choice.encoder = load_clip_encoder(self.settings, path=choice.folder / artifacts.CLIP_WEIGHTS, name=name)
            if choice.encoder.revision != choice.section["revision"]:
                raise BuildError(f"the fine-tuned encoder in {choice.folder} has revision {choice.encoder.revision}, "
                                 f"its manifest says {choice.section['revision']}")
        return choice.encoder

    def _build(self, version: str, building: Path, rows: list[ItemRow], prints: dict[str, str], *, full: bool,
               choices: dict[str, EncoderChoice | None]) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "format": artifacts.FORMAT_VERSION,
            "version": version,
            "created_at": utcnow().isoformat() + "Z",
            "item_count": len(rows),
            "fingerprints": prints,
            "spaces": {},
            "skipped_spaces": {},
        }
        cache_root = self.index_dir / "cache"
        for space in artifacts.SPACES:
            members = space_members(space, rows)
            if not members:
                manifest["skipped_spaces"][space] = "no items for this space"
                continue
            try:
                with self._stage(f"load:{space}"):
                    encoder = self._encoder_for(space, choices.get(space))
            except EncoderUnavailable as exc:
                if space == "text":
                    raise BuildError(f"text encoder unavailable: {exc}") from exc
                log.warning("CLIP space skipped: %s", exc)
                manifest["skipped_spaces"][space] = str(exc)
                continue
            with self._stage(f"embed:{space}"), session_scope(self.session_factory) as session:
                sv = self.embedder(space, rows, encoder, session=session, cache_root=cache_root, full=full,
                                   progress=self.progress, image_store=self.image_store)
            if not len(sv.ids):
                manifest["skipped_spaces"][space] = f"no item could be embedded ({len(sv.errors)} errors)"
                continue
            if space == "text" and sv.probes is None:  # embedded lazily, only for an approximate index
                sv.probes = TextProbes(self.session_factory, encoder, sv.ids, progress=self.progress)
            folder = building / space
            with self._stage(f"index:{space}"):
                info = self.index_builder(sv, folder, self.settings, progress=self.progress)
            with self._stage(f"verify:{space}"):
                self.verifier(folder, sv)
            files = {name: artifacts.file_entry(folder / name) for name in artifacts.SPACE_FILES}
            if space == "text" and self.settings.query_backend != "torch":
                with self._stage("export:query"):
                    self._export_query_encoder(building, manifest, encoder, sv)
            manifest["spaces"][space] = {
                "encoder": sv.encoder,
                "dim": sv.encoder["dim"],
                "count": int(len(sv.ids)),
                "embedded": sv.embedded,
                "cached": sv.cached,
                "errors": {str(k): v for k, v in list(sv.errors.items())[:200]},
                "error_count": len(sv.errors),
                **info,
                "files": files,
            }
        if "text" not in manifest["spaces"]:
            raise BuildError("nothing to index: the catalog has no live items")
        for space, choice in choices.items():  # the version carries the encoders its spaces need
            if choice is not None and space in manifest["spaces"]:
                key = ENCODER_SECTIONS[space]
                with self._step(f"copy:{key}"):
                    _link_tree(choice.folder, building / key)
                    manifest[key] = {**choice.section, "files": artifacts.tree_entries(building / key)}
        return manifest

    def _export_query_encoder(self, building: Path, manifest: dict[str, Any], encoder: Any, sv: SpaceVectors) -> None:
        """The text space's query encoder for ONNX Runtime, checked against ``encoder`` on query-like
        probes (``manifest["query_encoder"]``); an encoder that cannot be exported, or whose export
        disagrees, leaves the service on torch (``manifest["query_encoder_skipped"]`` says why)."""
        from indexer.query_export import AGREEMENT_PROBES, ExportSkipped, export_query_encoder

        folder = building / artifacts.QUERY_ENCODER_DIR
        if self._reuse_query_encoder(folder, manifest, encoder):
            return
        texts, _sources = recall_probe_texts(self.session_factory, sv.ids, AGREEMENT_PROBES)
        try:
            section = export_query_encoder(encoder, folder, backend=self.settings.query_backend, probes=texts,
                                           space_vectors=sv.vectors, recall_floor=self.settings.recall_floor)
        except ExportSkipped as exc:
            log.warning("query encoder not exported (the service encodes queries with torch): %s", exc)
            manifest["query_encoder_skipped"] = str(exc)
            return
        manifest["query_encoder"] = {**section, "files": artifacts.tree_entries(folder)}

    def _reuse_query_encoder(self, folder: Path, manifest: dict[str, Any], encoder: Any) -> bool:
        """Link the published version's fp32 export when it was made from these very weights: the
        same file (so workers keep the session they loaded; a new export is not byte-identical)
        and 2-4 s and ~90 MB less per rebuild. Its check compared it with these weights already.
        int8 is exported afresh: its check depends on the space's vectors."""
        if self.settings.query_backend != "onnx":
            return False
        current = artifacts.current_version(self.index_dir)
        if current is None:
            return False
        source = artifacts.version_dir(self.index_dir, current)
        try:
            old = artifacts.read_manifest(source).get("query_encoder") or {}
        except artifacts.ArtifactError:
            return False
        if (old.get("backend") != "onnx" or old.get("source") != {"name": encoder.name, "revision": encoder.revision}
                or not (source / artifacts.QUERY_ENCODER_DIR).is_dir()):
            return False
        _link_tree(source / artifacts.QUERY_ENCODER_DIR, folder)
        files = artifacts.tree_entries(folder)
        if files != old.get("files"):  # a damaged copy: export afresh instead
            shutil.rmtree(folder, ignore_errors=True)
            return False
        manifest["query_encoder"] = {**old, "reused_from": old.get("reused_from", current), "files": files}
        log.info("query encoder: the export of %s is reused (same weights)", current)
        return True

    def _fail(self, version: str, building: Path, exc: BaseException) -> None:
        """Remove the build folder and record the failure; neither may hide the original error.

        On a full disk or a dead database both can fail too: that is logged, not raised.
        """
        stage = failed_stage(exc)
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        reason = f"in stage {stage}: {what}" if stage else what
        try:
            if building.exists():
                artifacts.remove_tree(building)
        except OSError as cleanup:
            log.warning("could not remove %s (run recsys-indexer gc): %s", building, cleanup)
        try:
            self._record(version, "failed", building, message=reason)
        except Exception as record:  # noqa: BLE001 - the database may be full or gone: keep the first error
            first = (str(record).splitlines() or [type(record).__name__])[0]
            log.warning("could not record build %s as failed: %s", version, first)
        log.error("build %s failed (%s); the published version is unchanged", version, reason)

    def _record(self, version: str, status: str, path: Path, *, manifest: dict | None = None, message: str | None = None) -> None:
        """Keep the ``index_versions`` row in step (its own transaction: it must survive failures)."""
        with session_scope(self.session_factory) as session:
            row = session.scalar(select(IndexVersion).where(IndexVersion.version == version))
            if row is None:
                row = IndexVersion(version=version, status=status, path=str(path), item_count=0, manifest={})
                session.add(row)
            row.status, row.path = status, str(path)
            if manifest is not None:
                row.manifest = _manifest_summary(manifest)
                row.item_count = int(manifest.get("item_count", 0))
            if message is not None:
                row.message = message[:2000]


def _manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the SQL row keeps of a manifest (not the per-item errors, nor the model's files)."""
    spaces = {
        name: {k: v for k, v in info.items() if k not in ("errors", "tuning", "files")}
        for name, info in manifest.get("spaces", {}).items()
    }
    out = {"spaces": spaces, "skipped_spaces": manifest.get("skipped_spaces", {}), "timings": manifest.get("timings", {})}
    if "behaviour" in manifest:
        out["behaviour"] = behaviour_summary(manifest["behaviour"])
    for key in ENCODER_SECTIONS.values():
        if key in manifest:
            out[key] = encoder_summary(manifest[key])
    return out


def behaviour_summary(section: dict[str, Any]) -> dict[str, Any]:
    """The model section as status pages show it: recipe, test metrics, gate (no candidate table)."""
    return {k: v for k, v in section.items() if k not in ("files", "validation")}


def encoder_summary(section: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuned encoder section as status pages show it: identity, metrics, gate, cost."""
    out = {k: v for k, v in section.items() if k not in ("files", "fit")}
    fit = section.get("fit") or {}
    out["fit"] = {k: fit.get(k) for k in ("train_pairs", "valid_pairs", "epochs_run", "valid_loss", "seconds",
                                          "pairs_per_second", "device", "precision") if k in fit}
    return out


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file under ``source`` into ``target`` (copy where the file system refuses)."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_dir():
            _link_tree(path, target / path.name)
            continue
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)


def publish_version(settings: Settings, session_factory: sessionmaker[Session], version: str, *,
                    expected: RemotePointer | None = None) -> None:
    """Point ``CURRENT`` at a verified version and mark it published in SQL (also used for rollback).

    With an artifact store the version is uploaded (unless there already), verified there and
    published by swapping the store's pointer first (compared with ``expected``, the pointer as
    the build read it; default: as it is now), then this host's ``CURRENT``; a version built on
    another host is fetched first.

    Raises:
        artifacts.ArtifactError: the version is missing or fails its checksums.
        object_store.PointerConflict: the store's pointer changed since ``expected`` was read.
    """
    folder = artifacts.version_dir(settings.index_path, version)
    remote = RemoteStore.from_settings(settings)
    if remote is not None and not folder.is_dir():
        remote.download(version, settings.index_path)
    manifest = artifacts.verify_version(folder, checksums=True)
    if remote is not None:
        object_store.publish(remote, folder, version, expected=expected, manifest=manifest)
    artifacts.set_current(settings.index_path, version)
    now = utcnow()
    with session_scope(session_factory) as session:
        session.execute(update(IndexVersion).where(IndexVersion.status == "published").values(status="ready"))
        row = session.scalar(select(IndexVersion).where(IndexVersion.version == version))
        if row is None:  # a version folder copied in from elsewhere
            row = IndexVersion(version=version, status="published", path=str(folder),
                               item_count=int(manifest.get("item_count", 0)), manifest=_manifest_summary(manifest))
            session.add(row)
        row.status, row.published_at, row.path = "published", now, str(folder)
    log.info("published version %s", version)


def garbage_collect(settings: Settings, session_factory: sessionmaker[Session], keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the published one) and stale build folders.

    Returns:
        Names of what was removed.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    index_dir = settings.index_path
    removed: list[str] = []
    try:
        with build_lock(index_dir):
            for path in artifacts.stale_builds(index_dir):
                artifacts.remove_tree(path)
                removed.append(path.name)
            for path in Path(index_dir).glob(".deleting-*"):
                shutil.rmtree(path, ignore_errors=True)
            # With the lock held, a row still "building" belongs to a killed build.
            with session_scope(session_factory) as session:
                session.execute(update(IndexVersion).where(IndexVersion.status == "building")
                                .values(status="failed", message="killed (never finished); cleaned up by gc"))
    except BuildLocked:
        log.info("a build is running: build folders are left alone")
    candidates = [v for v in artifacts.list_versions(index_dir) if not v.published]  # newest first
    has_published = artifacts.current_version(index_dir) is not None
    gone = [v.name for v in candidates[max(0, keep - int(has_published)):]]
    for name in gone:
        artifacts.remove_tree(artifacts.version_dir(index_dir, name))
    remote = RemoteStore.from_settings(settings)
    if remote is not None:  # the store keeps the same number of versions, its published one included
        published = remote.read_pointer().version
        stored = [name for name in remote.list_versions() if name != published]  # newest first
        for name in stored[max(0, keep - int(published is not None)):]:
            remote.delete_version(name)
            removed.append(f"{remote.url}/{artifacts.VERSIONS}/{name}")
            gone.append(name)
    if gone:
        with session_scope(session_factory) as session:
            session.execute(update(IndexVersion).where(IndexVersion.version.in_(gone)).values(status="deleted"))
    return removed + sorted(set(gone), key=gone.index)

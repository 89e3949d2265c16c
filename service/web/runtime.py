"""Everything a request needs, owned by one app: ``Runtime``, ``runtime()`` and ``db_session()``.

The resource module of the web layer (the role of flaskr's ``db.py``): blueprints import
``runtime()`` and ``db_session()`` from here, the factory (``service.web.app``) builds the
:class:`Runtime` and registers it, and nothing imports the factory.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
from flask import current_app, g
from sqlalchemy.orm import Session

from service.recommend import collab, event_window
from service.recommend.behaviour import BehaviourModel, Snapshot
from service.recommend.learned_rank import Ranker
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.image_sources import ImageSources
from service.store.query_log import QueryLogBuffer
from service.vectors import artifacts
from service.vectors.delta import DeltaSet
from service.vectors.index_store import IndexStore, LoadedSpace, LoadedVersion
from service.vectors.mirror import VersionMirror
from service.vectors.object_store import RemoteStore
from service.vectors.query_cache import QueryCache
from service.web.errors import APIError
from service.web.metrics import Metrics

log = logging.getLogger("recsys.service")
# Encoders are shared by every app in the process (tests build many apps; workers build one).
_ENCODERS: dict[tuple, Any] = {}
_ENCODER_LOCK = threading.Lock()
# Fine-tuned encoders kept loaded per kind (the served version's and the one before: a swap back
# after a rollback does not reload). Each is a full model (~90 MB for MiniLM, ~600 MB for ViT-B-32).
_FINETUNED_KEPT = 2


def _limit_torch_threads(settings: Settings) -> None:
    if settings.torch_threads:
        import torch

        # Several workers on few cores: fewer threads each avoids oversubscription.
        torch.set_num_threads(settings.torch_threads)


def _shared_encoder(kind: str, settings: Settings):
    from service.vectors.clip_encoder import load_clip_encoder
    from service.vectors.text_encoder import load_text_encoder

    key = (kind, settings.text_model) if kind == "text" else (kind, settings.clip_model, settings.clip_pretrained)
    with _ENCODER_LOCK:
        if key not in _ENCODERS:
            _limit_torch_threads(settings)
            loader = load_text_encoder if kind == "text" else load_clip_encoder
            _ENCODERS[key] = loader(settings)
        return _ENCODERS[key]


def _finetuned_encoder(settings: Settings, folder: str, section: Mapping[str, Any], kind: str = "text"):
    """The fine-tuned encoder (``kind`` text or clip) in a version's folder, loaded once per process.

    Raises:
        EncoderUnavailable: it cannot be loaded, or its weights are not the ones the manifest names.
    """
    from service.vectors.clip_encoder import load_clip_encoder
    from service.vectors.encoders import EncoderUnavailable
    from service.vectors.text_encoder import load_text_encoder

    key = (f"{kind}-finetuned", folder, section.get("revision"))
    with _ENCODER_LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key]
    # Loaded outside the lock: requests of the served version must not wait seconds for a new
    # version's encoder (two threads may both load it once; the first one kept wins).
    _limit_torch_threads(settings)
    name = str(section.get("name") or folder)
    if kind == "text":
        encoder = load_text_encoder(settings, path=folder, name=name)
    else:
        encoder = load_clip_encoder(settings, path=Path(folder) / artifacts.CLIP_WEIGHTS, name=name)
    if encoder.revision != section.get("revision"):
        raise EncoderUnavailable(f"the encoder in {folder} has revision {encoder.revision}, "
                                 f"the manifest says {section.get('revision')}")
    with _ENCODER_LOCK:
        if key not in _ENCODERS:
            loaded = [k for k in _ENCODERS if k[0] == key[0]]
            for old in loaded[: max(0, len(loaded) - _FINETUNED_KEPT + 1)]:
                del _ENCODERS[old]
            _ENCODERS[key] = encoder
        return _ENCODERS[key]


class Learned(NamedTuple):
    """A version's trained model and what the training stage fitted with it (None where absent)."""

    model: collab.CollabModel | None = None
    blend: Mapping[str, float] | None = None  # fitted blend weights (None unless ``learned_blend``)
    ranker: Ranker | None = None  # the learned ranker (None unless ``learned_blend`` and it won)
    touched: np.ndarray | None = None  # items with an event up to the training watermark


NO_MODEL = Learned()


class Runtime:
    """Everything a request needs, owned by one app: settings, database, index, encoders."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # The clock of recommendations (Unix seconds): decay and trending windows. Tests fix it to
        # compare the endpoint with the offline evaluation at the same instant.
        self.clock: Callable[[], float] = time.time
        self.engine = make_engine(settings)
        self.session_factory = make_session_factory(self.engine)
        self.metrics = Metrics()
        # The image store and the URL guard are settings-only objects: built once, shared by requests.
        self.image_sources = ImageSources.from_settings(settings)
        self.images = self.image_sources.store
        self.deltas = DeltaSet(settings.index_path)
        self.behaviour = BehaviourModel.from_settings(settings, window_source=self.event_window)
        self.clip_error: str | None = None
        self.query_encoder_error: str | None = None  # why the version's ONNX query encoder is not used
        # Recent query vectors of this worker, keyed by space and encoder revision.
        self.query_cache = QueryCache(settings.query_cache_size)
        # Recent search texts (no user, no time of day), written in batches: the rebuild's recall probes.
        self.query_log = QueryLogBuffer(self.session_factory, keep=settings.query_log_size,
                                        max_chars=settings.max_query_chars)
        self._suggester = None
        self._suggester_lock = threading.Lock()
        # (version name, what was trained with it)
        self._learned: tuple[str, Learned] | None = None
        self._learned_lock = threading.Lock()
        self._suggester_checked = 0.0
        # With an artifact store, the index directory is this host's verified cache of its versions.
        remote = RemoteStore.from_settings(settings)
        self.mirror = VersionMirror(remote, settings.index_path, serving=self._serving) if remote else None
        self.store = IndexStore(
            settings.index_path, poll_seconds=settings.index_poll_seconds,
            check_compatible=self._check_compatible, on_swap=self._on_swap,
            sync=self.mirror.sync if self.mirror else None,
        )

    def _serving(self) -> str | None:
        current = self.store.current
        return current.name if current is not None else None

    # --- encoders ------------------------------------------------------------------------
    def text_encoder(self, version: LoadedVersion | None = None):
        """The encoder ``version``'s text space was built with (default: the served version's):
        its fine-tuned encoder when it carries one, else the configured ``text_model``."""
        version = version or self.store.current
        return self._encoder_of(version.manifest if version is not None else None, "text")

    def _encoder_of(self, manifest: Mapping[str, Any] | None, kind: str):
        """The encoder a version's ``kind`` ("text" or "clip") space was built with: the fine-tune
        its manifest carries, else the configured pretrained model.

        Raises:
            EncoderUnavailable: the fine-tune cannot be loaded, or its manifest section is malformed
                (a manifest may come from an object store another host wrote).
        """
        from service.vectors.encoders import EncoderUnavailable

        key = artifacts.ENCODER_SECTIONS[kind]
        section = (manifest or {}).get(key)
        if not section:
            return _shared_encoder(kind, self.settings)
        if not isinstance(section, Mapping) or not isinstance(section.get("revision"), str):
            raise EncoderUnavailable(f"the manifest's {key} section is malformed")
        folder = artifacts.version_dir(self.settings.index_path, str(manifest.get("version"))) / key
        return _finetuned_encoder(self.settings, str(folder), section, kind=kind)

    def clip_encoder(self, version: LoadedVersion | None = None):
        """The CLIP encoder ``version``'s clip space was built with (default: the served version's):
        its fine-tuned weights when it carries them, else ``clip_model`` + ``clip_pretrained``;
        APIError 503 when it cannot be loaded here."""
        from service.vectors.encoders import EncoderUnavailable

        version = version or self.store.current
        try:
            return self._encoder_of(version.manifest if version is not None else None, "clip")
        except EncoderUnavailable as exc:
            raise APIError(503, f"CLIP encoder unavailable: {exc}") from exc

    def onnx_query_encoder(self, version: LoadedVersion | None = None):
        """The text query encoder ``version`` (default: the served one) carries for ONNX Runtime, when
        ``query_backend`` asks for that backend, it was exported from the encoder the text space
        was built with, and it loads; else None (queries go through torch; ``query_encoder_error``
        says why when it failed to load)."""
        version = version or self.store.current
        return self._onnx_of(version.manifest) if version is not None else None

    def _onnx_of(self, manifest: Mapping[str, Any]):
        from service.vectors.encoders import EncoderUnavailable
        from service.vectors.onnx_query import shared_onnx_query_encoder

        text = manifest["spaces"].get("text")
        section = manifest.get("query_encoder")
        if (self.settings.query_backend == "torch" or text is None or not isinstance(section, dict)
                or section.get("backend") != self.settings.query_backend
                or not isinstance(section.get("source"), dict)
                or section["source"].get("revision") != text["encoder"].get("revision")):
            return None
        folder = artifacts.version_dir(self.settings.index_path, str(manifest["version"])) / artifacts.QUERY_ENCODER_DIR
        # Its files entries were checked (names, sizes, checksums) when the version was loaded.
        sha = section["files"].get(str(section.get("model_file")), {}).get("sha256", "")
        try:
            return shared_onnx_query_encoder(folder, sha, threads=self.settings.torch_threads)
        except EncoderUnavailable as exc:
            if self.query_encoder_error != str(exc):
                log.error("%s: queries are encoded with torch instead", exc)
            self.query_encoder_error = str(exc)
            return None

    def query_encoder(self, space_name: str, version: LoadedVersion | None = None) -> Callable[[str], np.ndarray]:
        """The query encoder of a space (``text`` or ``clip``) of ``version`` (default: the served
        one), through this worker's query cache (keyed by encoder revision and backend).

        Text queries take the version's ONNX export when ``query_backend`` asks for it, else the
        torch encoder's one-string fast path (``encode_query``); CLIP queries its text tower.
        APIError 503 when the CLIP encoder cannot be loaded here, or when the export cannot and
        this service's torch encoder has other weights than the version's.
        """
        if space_name == "text":
            version = version or self.store.current
            encoder = self.onnx_query_encoder(version)
            if encoder is None:
                encoder = self.text_encoder(version)
                built_with = version.spaces["text"].encoder.get("revision") if version is not None else None
                if built_with is not None and encoder.revision != built_with:
                    # Served through its export, which no longer loads; torch here has other weights.
                    raise APIError(503, "the text space's query encoder cannot be loaded here: "
                                        f"{self.query_encoder_error or 'no export for query_backend'}")
            encode = encoder.encode_query
        elif space_name == "clip":
            encoder = self.clip_encoder(version)
            encode = encoder.encode_text
        else:
            raise ValueError(f"no query encoder for space {space_name!r}")
        return self.query_cache.wrap(space_name, encoder, encode)

    def _check_compatible(self, manifest: dict[str, Any]) -> str | None:
        from service.vectors.encoders import EncoderUnavailable

        text = manifest["spaces"].get("text")
        if text is None:
            return "no text space"
        if manifest.get(artifacts.CLIP_ENCODER_DIR) and self.settings.clip_enabled:
            try:  # a CLIP space whose own weights fail to load is refused, as a text one is
                self._encoder_of(manifest, "clip")
            except EncoderUnavailable as exc:
                return f"its fine-tuned CLIP encoder cannot be loaded: {exc}"
        onnx = self._onnx_of(manifest)
        if onnx is not None and onnx.dim == int(text["dim"]):
            # Queries go through the version's own export, checked at build time against the
            # encoder that built the space: torch is not needed to serve it (nor loaded at start;
            # item writes check their encoder, service.web.items.embed_fresh).
            return None
        try:
            encoder = self._encoder_of(manifest, "text")
        except EncoderUnavailable as exc:  # the previous version keeps serving
            return f"its fine-tuned text encoder cannot be loaded: {exc}"
        if text["encoder"]["revision"] != encoder.revision or int(text["dim"]) != encoder.dim:
            return (f"text space built with {text['encoder']['name']}@{text['encoder']['revision']}, "
                    f"this service encodes queries with {encoder.name}@{encoder.revision} (set RECSYS_TEXT_MODEL)")
        return None

    def _on_swap(self, version: LoadedVersion) -> None:
        spaces = {name: (sp.dim, sp.encoder["revision"]) for name, sp in version.spaces.items()}
        self.deltas.reset(version.name, version.read_at, spaces)
        with self.session_factory() as session:
            self.deltas.sync(session, force=True)
        self.metrics.set_version(version.name, {n: s.count for n, s in version.spaces.items()})
        self.clip_error = None
        if "clip" in version.spaces:
            from service.vectors.encoders import EncoderUnavailable

            try:
                clip = self._encoder_of(version.manifest, "clip")
                if clip.revision != version.spaces["clip"].encoder["revision"]:
                    self.clip_error = "the CLIP space was built with other weights than this service loads"
            except EncoderUnavailable as exc:
                self.clip_error = str(exc)
            if self.clip_error:
                log.error("CLIP space of %s not served: %s", version.name, self.clip_error)

    # --- per request -----------------------------------------------------------------------
    def version(self) -> LoadedVersion:
        """The version for this request, or 503 when none is published yet."""
        self.store.ensure_polling()
        version = self.store.current
        if version is None:
            self.store.refresh()
            version = self.store.current
        if version is None:
            raise APIError(503, "no index is published yet: run `recsys-indexer build` (item and event writes still work)")
        return version

    def served_space(self, version: LoadedVersion, name: str) -> LoadedSpace:
        """A space of ``version`` this worker can serve, or APIError 503 saying why not."""
        space = version.spaces.get(name)
        if space is None:
            reason = version.manifest.get("skipped_spaces", {}).get(name, "not built")
            raise APIError(503, f"the {name} space is not in index version {version.name}: {reason}")
        if name == "clip" and self.clip_error:
            raise APIError(503, f"the clip space is not served: {self.clip_error}")
        return space

    def now(self) -> float:
        """The current time for recommendations (see ``clock``)."""
        return self.clock()

    def learned(self, version: LoadedVersion | None) -> Learned:
        """The version's trained model (memory-mapped, loaded once per version) and what was
        fitted with it; :data:`NO_MODEL` without one."""
        if version is None:
            return NO_MODEL
        cached = self._learned
        if cached is None or cached[0] != version.name:
            with self._learned_lock:
                if self._learned is None or self._learned[0] != version.name:
                    self._learned = (version.name, self._load_learned(version))
                cached = self._learned
        return cached[1]

    def _load_learned(self, version: LoadedVersion) -> Learned:
        section = version.manifest.get("behaviour") or {}
        if section.get("status") != "trained":
            return NO_MODEL
        folder = artifacts.version_dir(self.settings.index_path, version.name) / collab.MODEL_DIR
        try:
            model = collab.load_model(folder, section["family"], dict(section["params"]))
            touched = collab.load_touched(folder)
            if not self.settings.learned_blend:
                return Learned(model, touched=touched)
            ranked = (section.get("ranker") or {}).get("used")
            return Learned(model, dict(section["blend"]), Ranker.load(folder, section["ranker"]) if ranked else None,
                           touched)
        except Exception as exc:  # noqa: BLE001 - checksums passed: a format this code can't read; serve without it
            log.error("model of version %s not served (co-engagement answers): %s", version.name, exc)
            return NO_MODEL

    def event_window(self, session: Session) -> event_window.Window | None:
        """The served version's newest events (its training stage wrote them), when they are this
        database's: a worker's first behaviour load then reads only newer events from SQL."""
        version = self.store.current
        meta = ((version.manifest.get("behaviour") or {}).get("window") if version is not None else None)
        if not meta:
            return None
        folder = artifacts.version_dir(self.settings.index_path, version.name) / collab.MODEL_DIR
        try:
            window = event_window.load(folder, meta)
        except Exception as exc:  # noqa: BLE001 - checksums passed: a format this code can't read
            log.error("event window of version %s not used (reading events from SQL): %s", version.name, exc)
            return None
        if not event_window.matches_database(session, window.events):
            log.warning("event window of version %s does not match this database's events (reading them from "
                        "SQL)", version.name)
            return None
        return window

    def behaviour_snapshot(self) -> Snapshot:
        """Everyone's behaviour as of the last refresh (loaded on first use, then in the background)."""
        self.behaviour.ensure_refreshing(self.session_factory)
        return self.behaviour.snapshot

    def suggester(self, session: Session):
        """Typeahead index, rebuilt when the catalog changed (checked at most once a second)."""
        from service.search.suggest import Suggester

        now = time.monotonic()
        if self._suggester is not None and now - self._suggester_checked < 1.0:
            return self._suggester
        with self._suggester_lock:
            if self._suggester is None or (now - self._suggester_checked >= 1.0 and self._suggester.needs_refresh(session)):
                fresh = Suggester()
                fresh.refresh(session)
                self._suggester = fresh
            self._suggester_checked = now
            return self._suggester


def runtime() -> Runtime:
    return current_app.extensions["recsys"]


def db_session() -> Session:
    """The request's session (opened on first use, closed at teardown; commit explicitly)."""
    if "db_session" not in g:
        g.db_session = runtime().session_factory()
    return g.db_session

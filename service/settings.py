"""One settings object: defaults, then ``RECSYS_*`` environment variables, then explicit overrides.

The app factory and every CLI command build it with :func:`load_settings`; nothing reads the
environment anywhere else. The embedded default needs no configuration: a data directory
(``./data``) holding the SQLite database and the index artifacts.
"""

from __future__ import annotations

import dataclasses
from collections import abc
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, get_type_hints

ENV_PREFIX = "RECSYS_"

BUILTIN_EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")
# Candidate sources of recommendations, blended by ``blend_weights``.
BLEND_SOURCES = ("profile", "co_engagement", "trending", "model")
# Collaborative model families the training stage may fit (service.recommend.collab).
MODEL_FAMILIES = ("ease", "item_knn", "rp3beta", "factor", "sequence")
# Query encoders /search can use (see the query_backend setting).
QUERY_BACKENDS = ("torch", "onnx", "onnx-int8")
# How content is scored from liked items (the content_scoring setting; the ways are
# service.recommend.ranking.PROFILE_WAYS).
CONTENT_SCORINGS = ("auto", "mean", "pow3", "pow8")


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the service and the indexer, with its default.

    Environment variable: ``RECSYS_`` + the upper-cased field name (``RECSYS_DATA_DIR``).
    Lists and mappings are given as JSON (``RECSYS_CUSTOM_EVENT_TYPES='["share"]'``).
    """

    # Where the embedded default keeps everything.
    data_dir: Path = Path("data")
    # SQLAlchemy URL; empty means SQLite at <data_dir>/recsys.db.
    database_url: str = ""
    # Index artifacts (one folder per version); empty means <data_dir>/indexes.
    index_dir: str = ""
    # Log SQL statements (debugging only).
    sql_echo: bool = False
    # Versions in an object store (issue 14): an fsspec URL (s3://bucket/prefix, gs://..., file://...)
    # the indexer publishes to and every service host serves from; index_dir then is this host's
    # verified local cache of the versions it serves. Empty: index_dir is the only store.
    artifact_url: str = ""
    # fsspec storage options of artifact_url (and image_url) as JSON (e.g. {"client_kwargs": {"endpoint_url":
    # "http://minio:9000"}}); credentials are better left to the store's own environment variables.
    artifact_options: Mapping[str, Any] = field(default_factory=dict)
    # Rebuilds on a Ray cluster: its address ("auto" = the local one, started when none runs;
    # "ray://head:10001" = a remote one). Empty: the rebuild runs in this process.
    ray_address: str = ""
    # Embedding actors (each holds one encoder; 0 = one per CPU of the cluster, or per GPU when it has GPUs).
    ray_workers: int = 0

    # Events: custom types beyond the built-in ones, accepted by import and the API.
    custom_event_types: tuple[str, ...] = ()
    # Relative weight of each event type when building user profiles (view < click < cart < purchase).
    event_weights: Mapping[str, float] = field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0, "rating": 1.0}
    )
    # Time decay of a user's history (half-life in days): recent interest counts most (7 and 3
    # days scored alike on MovieLens-100K, 30 days clearly worse).
    event_half_life_days: float = 7.0
    # Ratings are weighted by value: event_weights["rating"] * (value - rating_neutral), so a 5
    # counts twice a 4 and ratings at or below neutral push the profile away.
    rating_neutral: float = 3.0
    # Rows per transaction when importing events.
    import_batch_size: int = 5000

    # Recommendations: how many of a user's most recent events build the profile.
    history_limit: int = 500
    # Weights of the candidate sources in the blended score (each source is scaled to [0, 1]):
    # profile = FAISS search with the user's profile vector, co_engagement = "people who
    # interacted with X also interacted with Y", trending = decayed recent popularity.
    # Small content and trending weights still reorder close co-engagement scores and carry
    # new items and quiet users; `recsys eval --tune --write-settings` fits them to a catalog.
    blend_weights: Mapping[str, float] = field(
        default_factory=lambda: {"profile": 0.1, "co_engagement": 1.0, "trending": 0.03}
    )
    # Places at the end of a personal page kept for items nobody has engaged with yet, filled
    # by their best content matches (0 = none): how a new item meets its first users.
    cold_item_slots: int = 1
    # A new item takes such a place only when the person's content profile ranks it among its own
    # best N matches, warm items included. "auto": the training stage chooses N on validation (the
    # largest of 5/10/20/50/100 that keeps NDCG@10 within `cold_item_warm_tolerance` of the same
    # recipe without the place; 20 where no model is trained); a number (1 to
    # `candidates_per_source`) forces N.
    cold_item_rank: str = "auto"
    # How much validation NDCG@10 the cold place may cost when its bar is chosen ("auto"), in [0, 1).
    cold_item_warm_tolerance: float = 0.02
    # Candidates drawn from each source before blending.
    candidates_per_source: int = 200
    # How the training stage scores content from a person's liked items: "auto" chooses on
    # validation by the content source's NDCG@10; "mean" (one profile vector), "pow3" or "pow8"
    # (a soft maximum over the liked items) force a way, e.g. "mean" where cold items matter more
    # than warm accuracy (on MovieLens pow8 found warm items better and cold ones worse).
    content_scoring: str = "auto"
    # Liked items (the heaviest) a soft-maximum content scoring searches from, one query each
    # (1-1024): where the training stage chose pow3/pow8, the content source's cost per request
    # grows with this (docs/benchmarks.md, bench_profile_ways).
    profile_max_seeds: int = 32
    # Event types whose items are left out of a user's recommendations (exclude_seen=true).
    exclude_seen_types: tuple[str, ...] = ("view", "click", "purchase", "rating")
    # Popularity exponent in co-engagement: neighbours' scores are divided by popularity**this
    # (0 = plain cosine; higher fights popularity bias).
    co_engagement_popularity_damping: float = 0.0
    # Inverse user frequency in co-engagement: a user's engagements count 1 / (items they
    # touched) ** this, so people who engage with everything weigh less (0.5 measured best on
    # MovieLens-100K).
    co_engagement_user_damping: float = 0.5
    # Default diversity (maximal marginal relevance) when a request gives none: 0 = pure relevance.
    default_diversity: float = 0.0
    # Trending: default window and its own half-life (days).
    trending_window_days: float = 7.0
    trending_half_life_days: float = 3.0
    # Training stage of the rebuild (`recsys-indexer build` / `train`): collaborative model
    # families to try; the best on held-out behaviour wins.
    train_families: tuple[str, ...] = MODEL_FAMILIES
    # Memory the fitted model and its fit may take (bounds EASE's item count and kNN's blocks).
    train_memory_budget_mb: float = 1024.0
    # Users sampled (seeded) to validate and gate the model: more is steadier, and slower.
    train_eval_users: int = 1000
    # Fewest positive interactions worth training on (fewer: no model, co-engagement answers).
    train_min_interactions: int = 200
    # Quality gate: a new model whose test NDCG@10 is below the published model's (refit on the
    # same split) by more than this fraction is not published (`--force` publishes anyway).
    train_gate_tolerance: float = 0.02
    # Serve with the blend weights the training stage fitted on held-out behaviour (when the
    # published version has a model) instead of blend_weights.
    learned_blend: bool = True
    # Newest events each worker keeps in memory for co-engagement and trending (start-up loads
    # this many, from the served version's event window when it holds them, else from SQL; older
    # behaviour reaches answers through the trained model). 1M: 278 MiB per worker; from SQL
    # 2.6 s, from the window 0.46 s.
    behaviour_max_events: int = 1_000_000
    # Fine-tuning the text encoder on behaviour (`recsys-indexer finetune`): also run it in every
    # `recsys-indexer build` when true (it publishes only through its own quality gate; a refused
    # fine-tune leaves the build with the encoder in use).
    finetune_on_rebuild: bool = False
    # With finetune_on_rebuild: new events since the last fine-tune (published or refused) before
    # a build fine-tunes again.
    finetune_min_new_events: int = 10_000
    # Passes over the training pairs at most (early stopping on held-out pairs may stop sooner).
    finetune_epochs: int = 2
    # Pairs per step: each pair's positive is every other anchor's negative (in-batch negatives).
    # Training memory grows with it and with text length: 64 pairs of ~130-token demo texts
    # peaked at 7.8 GB on CPU.
    finetune_batch_size: int = 32
    # Peak learning rate of the text fine-tune (AdamW, linear warm-up and decay); 1e-4 overfit
    # the tests' small catalog and lost a quarter of its cold-item recall.
    finetune_learning_rate: float = 3e-5
    # Fine-tune the CLIP encoder too when the CLIP space is built (its weights load): on each
    # item's (image, title), (image, query) from search clicks and (image, co-engaged title),
    # gated on the CLIP space's own held-out metrics. Batch size and epochs as for text.
    finetune_clip: bool = True
    # CLIP's learning rate (AdamW, open_clip's recipe): lower than text's, the towers are larger.
    finetune_clip_learning_rate: float = 1e-5
    # Two positive engagements of one user this close in time make an item -> item pair (days).
    finetune_window_days: float = 30.0
    # Training pairs at most (the heaviest first), and from one user at most.
    finetune_max_pairs: int = 50_000
    finetune_max_pairs_per_user: int = 100
    # Fewest training pairs worth fine-tuning on (fewer: the encoder stays as it is).
    finetune_min_pairs: int = 200
    # Quality gate: refused when a held-out metric falls below the published encoder's by more
    # than this fraction (content-only NDCG@10, cold-item Recall@10, search MRR@10).
    finetune_gate_tolerance: float = 0.02
    # How often each worker pulls new events into its in-memory behaviour model (seconds).
    behaviour_refresh_seconds: float = 2.0
    # Nice value added to each worker's behaviour-refresh thread (Linux: per thread), so snapshot
    # rebuilds under a stream of events take the CPU only when requests leave it (0 = off; max 19).
    background_niceness: int = 10
    # Freeze the objects a worker holds after start-up (gc.freeze: torch, FAISS, the loaded version),
    # so a full garbage collection walks only newer ones: 0.6 s pauses become milliseconds.
    freeze_startup_heap: bool = True
    # A JSON file of settings, read under the environment (default <data_dir>/settings.json).
    settings_file: str = ""

    # Text encoder: a sentence-transformers name or local path; "default" = packaged all-MiniLM-L6-v2.
    text_model: str = "default"
    # CLIP: open_clip model name plus a pretrained tag or a local checkpoint path.
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    # Disable the CLIP space entirely.
    clip_enabled: bool = True
    # Encoding batch size and device ("auto" = CUDA when torch sees it).
    encode_batch_size: int = 64
    device: str = "auto"
    # Image loading: worker threads decoding and resizing, max pixels (decompression bombs).
    image_workers: int = 4
    max_image_pixels: int = 40_000_000
    # Content-addressed image store (every image the service serves or embeds lives here, by
    # sha256 of its bytes); empty means <data_dir>/images.
    image_dir: str = ""
    # A shared image store for several hosts (fsspec URL, e.g. s3://bucket/images, reached with
    # artifact_options): every blob is written there, and image_dir becomes this host's cache of it.
    image_url: str = ""
    # Import CLI only: local image paths must resolve inside this folder, symlinks included
    # (empty = the folder of the file being imported). The HTTP API never reads server paths.
    import_root: str = ""
    # Image URLs (API and import) are fetched by the service itself: loopback, private,
    # link-local, multicast and cloud-metadata addresses are refused unless listed here
    # (CIDRs such as "10.0.0.0/8", or exact host names).
    image_fetch_allow: tuple[str, ...] = ()
    # Image URLs: time limit for the whole fetch (seconds) and size limit (MB).
    image_fetch_timeout_seconds: float = 10.0
    image_fetch_max_mb: float = 20.0

    # Index build: memory budget for one space's index, recall floor and sample size.
    index_memory_budget_mb: float = 4096.0
    recall_floor: float = 0.95
    recall_sample: int = 1000

    # Service: API keys by scope (X-API-Key header or Authorization: Bearer). A write key can
    # also read, an admin key can do everything. With no key configured at all the service is
    # open (development only: it logs a warning and /status says so).
    read_keys: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    # Catalog reads (search, items, trending, the web page, /metrics, /openapi.json, /docs,
    # /status) need a read key too; health probes stay open.
    read_requires_key: bool = False
    # A user's recommendations and POST /recommend with a user_id (personal data) need a read
    # key whenever any key is configured.
    personal_reads_require_key: bool = True
    # Requests per minute per client: the authenticated key, or the client address for
    # anonymous requests; 0 disables the limit.
    rate_limit_per_minute: int = 0
    # Where rate-limit counters live: memory:// (per process) or redis://host:6379 (shared by
    # every worker and replica).
    rate_limit_storage_uri: str = "memory://"
    # Reverse proxies in front of the service whose X-Forwarded-For is trusted for the client
    # address (0 = use the connecting address).
    trusted_proxies: int = 0
    # Events: |value| must not exceed this (ratings, custom values), and a timestamp may lie at
    # most this many seconds in the future (clock skew); older than 1970 is refused too.
    event_value_limit: float = 1_000_000.0
    max_future_skew_seconds: float = 300.0
    # JSON request bodies: deepest nesting accepted.
    max_json_depth: int = 32
    # Retry-After (seconds) sent with 503 when the database or the disk is unavailable.
    outage_retry_after_seconds: int = 5
    # Request limits (clear 4xx errors beyond them).
    max_query_chars: int = 512
    max_k: int = 100
    max_offset: int = 1000
    max_upload_mb: float = 10.0
    # How often each worker checks for a newly published index version (seconds).
    index_poll_seconds: float = 2.0
    # Threads per worker for query encoding (torch, or ONNX Runtime's intra-op threads): 1 measured
    # fastest with 2 workers on 2 cores (0 = the library's default).
    torch_threads: int = 1
    # How /search turns a text query into a vector: "onnx" (the version's encoder exported to ONNX
    # Runtime by the rebuild: ~2.4x faster than torch for one query, vectors equal to 1e-7),
    # "onnx-int8" (int8 weights: ~5x, cosine ~0.99 to fp32, kept only when its top-10 agreement
    # holds recall_floor) or "torch". Read by the rebuild (what to export) and by the service.
    query_backend: str = "onnx"
    # Distinct recent search texts kept for the rebuild's recall check (text only: no user, no time
    # of day; e-mail addresses and long digit runs are never stored); 0 turns the log off, 1,000,000 at most.
    query_log_size: int = 10000
    # Recent query vectors kept per worker (LRU; search bars repeat queries; 0 disables the cache).
    query_cache_size: int = 1024
    # FAISS (OpenMP) threads per worker for searches: one query at a time is fastest single-
    # threaded, and gunicorn's threads already run queries side by side (0 = faiss's default).
    faiss_threads: int = 1

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path(self.data_dir) / 'recsys.db').resolve()}"

    @property
    def image_path(self) -> Path:
        """Folder of the content-addressed image store."""
        return Path(self.image_dir) if self.image_dir else Path(self.data_dir) / "images"

    @property
    def index_path(self) -> Path:
        """Folder holding index versions."""
        return Path(self.index_dir) if self.index_dir else Path(self.data_dir) / "indexes"

    @property
    def event_types(self) -> tuple[str, ...]:
        """Every accepted event type: built-in first, then custom ones."""
        return BUILTIN_EVENT_TYPES + tuple(t for t in self.custom_event_types if t not in BUILTIN_EVENT_TYPES)


def _coerce(name: str, hint: Any, raw: Any) -> Any:
    """Convert a raw value (string from the environment, or any override) to the field's type."""
    text = raw if isinstance(raw, str) else None
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            if text is not None and text.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if text is not None and text.strip().lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("expected true/false")
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if hint is float:
            number = float(raw)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return number
        if hint is Path:
            return Path(raw)
        if hint is str:
            return str(raw)
        origin = getattr(hint, "__origin__", None)
        value = json.loads(text) if text is not None else raw
        if origin is tuple:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a JSON list of strings")
            return tuple(value)
        if origin in (Mapping, dict, abc.Mapping):
            if not isinstance(value, Mapping):
                raise ValueError("expected a JSON object")
            if getattr(hint, "__args__", (None, None))[1] is Any:  # options passed on as they are
                return json.loads(json.dumps(value))
            out = {str(k): float(v) for k, v in value.items()}
            if any(v != v or abs(v) == float("inf") for v in out.values()):
                raise ValueError("expected finite numbers")
            return out
    except (TypeError, ValueError, json.JSONDecodeError) as exc:
        raise SettingsError(f"setting {name}: cannot use {raw!r} ({exc})") from exc
    return raw


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from defaults, then ``RECSYS_*`` variables, then ``overrides``.

    Raises:
        SettingsError: unknown override name, or a value of the wrong shape.
    """
    environ = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name in names:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            values[name] = _coerce(name, hints[name], environ[key])
    for name, raw in (overrides or {}).items():
        if name not in names:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _coerce(name, hints[name], raw)
    path = settings_file_path(Settings(**{k: v for k, v in values.items() if k in ("data_dir", "settings_file")}))
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SettingsError(f"settings file {path}: cannot read ({exc})") from exc
        if not isinstance(stored, dict):
            raise SettingsError(f"settings file {path}: must hold a JSON object")
        for name, raw in stored.items():
            if name not in names or name in ("data_dir", "settings_file"):
                raise SettingsError(f"settings file {path}: unknown or unsettable setting {name!r}")
            # The file sits under the environment and the overrides.
            if name not in values:
                values[name] = _coerce(name, hints[name], raw)
    settings = Settings(**values)
    _validate(settings)
    return settings


def settings_file_path(s: Settings) -> Path:
    """The settings file: ``settings_file`` when set, else ``<data_dir>/settings.json``."""
    return Path(s.settings_file) if s.settings_file else Path(s.data_dir) / "settings.json"


def write_settings_file(s: Settings, updates: Mapping[str, Any]) -> Path:
    """Merge ``updates`` into the settings file (written atomically) and return its path."""
    names = {f.name for f in fields(Settings)}
    unknown = set(updates) - names
    if unknown:
        raise SettingsError(f"unknown setting(s) {sorted(unknown)}")
    path = settings_file_path(s)
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update({k: (dict(v) if isinstance(v, Mapping) else v) for k, v in updates.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


MAX_PROFILE_SEEDS = 1024


def _validate(s: Settings) -> None:
    if not 0.0 < s.recall_floor <= 1.0:
        raise SettingsError(f"setting recall_floor: must be in (0, 1], got {s.recall_floor}")
    for name in ("import_batch_size", "encode_batch_size", "image_workers", "recall_sample", "max_query_chars", "max_k",
                 "history_limit", "candidates_per_source", "behaviour_max_events"):
        if getattr(s, name) < 1:
            raise SettingsError(f"setting {name}: must be >= 1, got {getattr(s, name)}")
    if not 1 <= s.profile_max_seeds <= MAX_PROFILE_SEEDS:  # each one is a query of every request's batch
        raise SettingsError(f"setting profile_max_seeds: must be in [1, {MAX_PROFILE_SEEDS}], got {s.profile_max_seeds}")
    for name, value in s.blend_weights.items():
        if name not in BLEND_SOURCES or value < 0:
            raise SettingsError(f"setting blend_weights: {name!r} must be one of {BLEND_SOURCES} with a weight >= 0")
    if not 0 <= s.background_niceness <= 19:
        raise SettingsError(f"setting background_niceness: must be in [0, 19], got {s.background_niceness}")
    if not 0.0 <= s.default_diversity <= 1.0:
        raise SettingsError("setting default_diversity: must be in [0, 1]")
    for name in ("trending_window_days", "trending_half_life_days", "behaviour_refresh_seconds"):
        if getattr(s, name) <= 0:
            raise SettingsError(f"setting {name}: must be > 0")
    for name in ("co_engagement_popularity_damping", "co_engagement_user_damping"):
        if getattr(s, name) < 0:
            raise SettingsError(f"setting {name}: must be >= 0")
    for name in ("cold_item_slots", "rate_limit_per_minute", "max_offset", "torch_threads", "faiss_threads", "trusted_proxies",
                 "max_future_skew_seconds", "query_cache_size", "query_log_size"):
        if getattr(s, name) < 0:
            raise SettingsError(f"setting {name}: must be >= 0, got {getattr(s, name)}")
    if s.cold_item_rank != "auto":
        forced = s.cold_item_rank.strip()
        if not (forced.isascii() and forced.isdigit() and 1 <= int(forced) <= s.candidates_per_source):
            raise SettingsError(f"setting cold_item_rank: must be 'auto' or a whole number in [1, candidates_per_source = "
                                f"{s.candidates_per_source}], got {s.cold_item_rank!r}")
    if not 0.0 <= s.cold_item_warm_tolerance < 1.0:
        raise SettingsError("setting cold_item_warm_tolerance: must be in [0, 1)")
    if s.max_upload_mb <= 0 or s.index_poll_seconds <= 0:
        raise SettingsError("settings max_upload_mb and index_poll_seconds must be > 0")
    for name in ("image_fetch_timeout_seconds", "image_fetch_max_mb", "event_value_limit", "max_json_depth",
                 "outage_retry_after_seconds"):
        if not getattr(s, name) > 0:
            raise SettingsError(f"setting {name}: must be > 0, got {getattr(s, name)}")
    if not s.rate_limit_storage_uri.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
        raise SettingsError("setting rate_limit_storage_uri: use memory:// or redis://host:port")
    for family in s.train_families:
        if family not in MODEL_FAMILIES:
            raise SettingsError(f"setting train_families: {family!r} is not one of {MODEL_FAMILIES}")
    if s.train_memory_budget_mb <= 0 or s.train_eval_users < 1 or s.train_min_interactions < 1:
        raise SettingsError("settings train_memory_budget_mb, train_eval_users and train_min_interactions must be > 0")
    if not 0.0 <= s.train_gate_tolerance < 1.0:
        raise SettingsError("setting train_gate_tolerance: must be in [0, 1)")
    if s.event_half_life_days <= 0:
        raise SettingsError("setting event_half_life_days: must be > 0")
    for name in ("finetune_epochs", "finetune_batch_size", "finetune_max_pairs", "finetune_max_pairs_per_user",
                 "finetune_min_pairs", "finetune_min_new_events"):
        if getattr(s, name) < 1:
            raise SettingsError(f"setting {name}: must be >= 1, got {getattr(s, name)}")
    if not (0 < s.finetune_learning_rate < 1 and 0 < s.finetune_clip_learning_rate < 1
            and 0 < s.finetune_window_days < 36_500):
        raise SettingsError("settings finetune_learning_rate and finetune_clip_learning_rate must be in (0, 1) "
                            "and finetune_window_days in (0, 36500)")
    if not 0.0 <= s.finetune_gate_tolerance < 1.0:
        raise SettingsError("setting finetune_gate_tolerance: must be in [0, 1)")
    if s.ray_workers < 0:
        raise SettingsError(f"setting ray_workers: must be >= 0, got {s.ray_workers}")
    if s.query_log_size > 1_000_000:  # far past any recall_sample, and inside every database's LIMIT
        raise SettingsError(f"setting query_log_size: at most 1000000, got {s.query_log_size}")
    if s.content_scoring not in CONTENT_SCORINGS:
        raise SettingsError(f"setting content_scoring: must be one of {CONTENT_SCORINGS}, got {s.content_scoring!r}")
    if s.query_backend not in QUERY_BACKENDS:
        raise SettingsError(f"setting query_backend: must be one of {QUERY_BACKENDS}, got {s.query_backend!r}")
    for name in ("artifact_url", "image_url"):
        if getattr(s, name) and "://" not in getattr(s, name):
            raise SettingsError(f"setting {name}: an fsspec URL such as s3://bucket/prefix or file:///srv/shared")
    for t in s.custom_event_types:
        if not t or len(t) > 32 or not t.replace("_", "").replace("-", "").isalnum():
            raise SettingsError(f"setting custom_event_types: bad type name {t!r}")


def describe() -> list[tuple[str, str, str]]:
    """(name, environment variable, default) for every setting, for docs and ``recsys config``."""
    rows = []
    for f in fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, ENV_PREFIX + f.name.upper(), json.dumps(default, default=str)))
    return rows


def forced_cold_rank(s: Settings) -> int | None:
    """The cold place's bar ``cold_item_rank`` forces, or None for "auto" (validated on load)."""
    return None if s.cold_item_rank == "auto" else int(s.cold_item_rank)

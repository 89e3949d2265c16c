"""Text embedding of a rebuild's cache misses as a Ray Data pipeline.

The misses (item ids, in id order) are cut into the partitions the local embedder uses
(:func:`indexer.pipeline.partitions`); the dataset holds one partition per row and block, and
``map_batches`` hands each to an actor of a fixed pool. An actor loads the encoder once (by
name or folder: the model is never pickled), opens its own database engine, reads its
partition's texts (:func:`indexer.pipeline.embed_text_partition`, what the local path embeds)
and returns ids and float32 vectors. The driver writes the vector cache as before.

Same model, same partitions, same device: the same bits as embedding here. Measured on the
build machine (2-core x86, torch CPU): torch's thread count (1 to 4) changes no bit, so actors
keep Ray's (one thread per reserved CPU); the partitions do (up to 8.6e-8 between one ``encode``
of 600 texts and partitions of 256). GPU actors run fp16: close to CPU vectors, not equal.

A worker that dies mid-partition is restarted and the partition retried (``retries`` times);
past that, :class:`indexer.pipeline.BuildError`: the embed stage fails before the cache or any
version is written. CLIP images are embedded in the driver process (not here).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from indexer.pipeline import BuildError, embed_text_partition, embed_texts, partitions
from indexer.ray_cluster import LazyCluster, RayUnavailable
from service.settings import Settings
from service.vectors.encoders import DEFAULT_TEXT_MODEL_NAME

log = logging.getLogger("recsys.indexer")


@dataclass(frozen=True)
class EncoderSource:
    """How an actor loads the driver's encoder: ``settings.text_model``, or the folder ``path``."""

    path: str | None
    name: str
    revision: str


def encoder_source(settings: Settings, encoder: Any) -> EncoderSource | None:
    """Where ``encoder`` was loaded from (None: not a loadable sentence-transformers encoder).

    The configured model is loaded by its setting on each node (the packaged default lives at
    each node's own path); any other (a fine-tuned version's) from the folder its weights came
    from, which the nodes must see at the same path. Actors check the revision either way.
    """
    revision, name, model = (getattr(encoder, a, None) for a in ("revision", "name", "model"))
    if not revision or not name or model is None:
        return None
    spec = settings.text_model.strip()
    if name == (DEFAULT_TEXT_MODEL_NAME if spec == "default" else spec):
        return EncoderSource(None, name, revision)
    try:
        path = model[0].auto_model.config._name_or_path  # the folder the transformer was loaded from
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return EncoderSource(str(path), name, revision) if path and os.path.isdir(path) else None


class EmbedActor:
    """One encoder and one database engine per actor; each call embeds whole partitions."""

    def __init__(self, settings: Settings, source: EncoderSource):
        from service.store.db import make_engine, make_session_factory
        from service.vectors.text_encoder import load_text_encoder

        if source.path is None:
            self.encoder = load_text_encoder(settings)
        else:
            self.encoder = load_text_encoder(settings, path=source.path, name=source.name)
        if self.encoder.revision != source.revision:
            raise RuntimeError(f"text encoder {source.name} loads as revision {self.encoder.revision} on this "
                               f"node, the build's is {source.revision}")
        self.engine = make_engine(settings)
        self.factory = make_session_factory(self.engine)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, vectors = [], []
        for part in batch["ids"]:
            part = [int(i) for i in part]
            with self.factory() as session:
                vectors.append(embed_text_partition(session, part, self.encoder))
            ids.append(np.asarray(part, dtype=np.int64))
        return {"id": np.concatenate(ids), "vector": np.concatenate(vectors)}


class RayTextEmbedder:
    """``embed_texts`` on a Ray cluster: ``text_embedder`` of :func:`indexer.pipeline.embed_space`.

    Args:
        workers: actors (0: ``settings.ray_workers``, and when that is 0 one per GPU of the
            cluster, else one per CPU); never more than there are partitions.
        retries: restarts of a dead actor and retries of its partition before the build fails.
        actor: the actor class (tests inject one that dies).
    """

    def __init__(self, settings: Settings, cluster: LazyCluster, *, workers: int = 0, retries: int = 3,
                 actor: type = EmbedActor):
        self.settings, self.cluster, self.retries, self.actor = settings, cluster, retries, actor
        self.workers = workers or settings.ray_workers

    def __call__(self, ids: list[int], encoder: Any, *, session: Session, progress: bool = False) -> np.ndarray:
        parts = partitions(len(ids))
        source = encoder_source(self.settings, encoder)
        if len(parts) < 2 or source is None:
            # One partition gains nothing from a cluster (and embeds to the same bits here).
            if source is None:
                log.warning("text: encoder %s cannot be loaded by Ray actors: embedding here",
                            getattr(encoder, "name", encoder))
            return embed_texts(ids, encoder, session=session, progress=progress)
        try:
            info = self.cluster.ensure()
            return self._embed(ids, parts, source, info, encoder.dim, progress)
        except RayUnavailable as exc:
            raise BuildError(f"text embedding on Ray: {exc}") from exc

    def _embed(self, ids: list[int], parts: list[slice], source: EncoderSource, info: Any, dim: int,
               progress: bool) -> np.ndarray:
        import ray

        gpus = int(info.gpus)
        slots = gpus or max(1, int(info.cpus))  # an actor holds a GPU, or a CPU: more would wait, unplaced
        workers = min(len(parts), slots, self.workers or slots)
        log.info("text: %d items in %d partitions on %d Ray actors (%s)", len(ids), len(parts), workers,
                 f"{gpus} GPUs" if gpus else f"{info.cpus:g} CPUs")
        # Ray Data restarts actors and retries without bound by default: a partition that kills its
        # worker every time would hang the build. (Free remote args are deprecated in Ray 2.60.)
        bounded = {"max_restarts": self.retries, "max_task_retries": self.retries}
        context = ray.data.DataContext.get_current()  # a dataset keeps the context it was made under
        shown, context.enable_progress_bars = context.enable_progress_bars, progress
        out = np.zeros((len(ids), dim), dtype=np.float32)
        seen = np.zeros(len(ids), dtype=bool)
        position = {pk: i for i, pk in enumerate(ids)}
        try:
            rows = [{"ids": np.asarray(ids[p], dtype=np.int64)} for p in parts]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # a block per partition: spread out
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                ds = ds.map_batches(self.actor, fn_constructor_kwargs={"settings": self.settings, "source": source},
                                    batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                                    num_gpus=1 if gpus else None, **bounded)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                at = np.fromiter((position[int(pk)] for pk in batch["id"]), dtype=np.int64, count=len(batch["id"]))
                out[at] = batch["vector"]
                seen[at] = True
        except ray.exceptions.RayError as exc:
            raise BuildError(f"text embedding on Ray failed: {str(exc).splitlines()[0]}") from exc
        finally:
            context.enable_progress_bars = shown
        if not seen.all():
            raise BuildError(f"text embedding on Ray returned {int(seen.sum())} of {len(ids)} vectors")
        return out


__all__ = ["EmbedActor", "EncoderSource", "RayTextEmbedder", "encoder_source"]

"""Fine-tuning the text encoder data-parallel through Ray Train (Torch DDP) on a local Ray cluster
started by the test: two CPU workers (gloo) split each epoch, the fine-tuned weights come back
into the caller's model, and the report is the one ``fit_text_encoder`` gives."""

from __future__ import annotations

import pytest
import torch

from indexer.finetune import FitOptions, PairTexts
from service.settings import load_settings
from service.vectors.text_encoder import load_text_encoder

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train")


COLORS = ["red", "blue", "green", "black", "white", "yellow", "purple", "orange"]
THINGS = ["running shoe", "rain jacket", "dome tent", "chef knife", "head lamp"]


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow  # the real text model in three processes (`make test-fast` leaves it out)
def test_two_workers_split_the_epoch_and_return_the_fine_tuned_weights(cluster, tmp_path):
    from indexer.ray_finetune import ray_fit_text_encoder

    encoder = load_text_encoder(load_settings(environ={}), training=True)
    anchors = [f"{c} {t}" for c in COLORS for t in THINGS]
    positives = [f"a {t} in {c}" for c in COLORS for t in THINGS]
    train, valid = PairTexts(anchors[:32], positives[:32]), PairTexts(anchors[32:], positives[32:])
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}

    report = ray_fit_text_encoder(encoder.model, train, valid, work_dir=tmp_path,
                                  options=FitOptions(epochs=1, batch_size=8), workers=2)

    # One process would take 32 / 8 = 4 steps; two workers take 8 pairs each per step: 2 steps.
    assert report.steps == 2 and report.train_pairs == 32 and report.epochs_run == 1.0
    assert len(report.valid_loss) == 2 and report.best_valid_loss == min(report.valid_loss)
    after = encoder.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2  # the trained weights replaced the base in place
    vectors = encoder.encode(["red running shoe", "a running shoe in red"])
    assert vectors.shape == (2, encoder.dim) and float(vectors[0] @ vectors[1]) > 0.5


@pytest.mark.parametrize(("gpus", "max_workers", "expected"), [(0, 0, "local"), (1, 0, "local"), (4, 0, 4), (4, 2, 2),
                                                               (2, 1, "local")])
def test_the_stage_goes_data_parallel_only_with_two_gpus_or_more(monkeypatch, gpus, max_workers, expected):
    from indexer import ray_finetune

    calls = []
    monkeypatch.setattr(ray_finetune, "fit_text_encoder", lambda *a, **k: calls.append(("local", k)) or "local")
    monkeypatch.setattr(ray_finetune, "ray_fit_text_encoder", lambda *a, **k: calls.append((k["workers"], k)) or "ray")

    class Cluster:
        def ensure(self):
            return type("Info", (), {"gpus": float(gpus)})()

    fit = ray_finetune.ClusterFit(Cluster(), max_workers)
    fit("model", "train", "valid", work_dir="w", options="o", device="cuda", progress=False)
    assert [c[0] for c in calls] == [expected]
    assert calls[0][1]["work_dir"] == "w" and (expected == "local" or calls[0][1]["use_gpu"] is True)

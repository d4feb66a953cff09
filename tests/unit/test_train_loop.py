"""The training loop's pieces: batching, padding, schedule, class weights, output handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ops.errors import UserError
from ops.settings import TrainSettings
from trainer.batching import batch_order, class_weights, collate
from trainer.loop import eval_points
from trainer.metrics import classification_metrics
from trainer.optim import make_optimization
from trainer.profiles import QUICK_PROFILE, apply_profile
from trainer.train import check_output_dir, staging_dir


def _lengths(n: int = 2000, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(5, 128, size=n)]


def _padding(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


@pytest.mark.parametrize("grouped", [True, False])
def test_every_index_appears_once_per_epoch(grouped: bool) -> None:
    lengths = _lengths(1013)
    batches = batch_order(lengths, 25, seed=1, group_by_length=grouped)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1013))
    assert all(1 <= len(b) <= 25 for b in batches)


def test_length_grouping_pads_far_less_than_random_batches() -> None:
    lengths = _lengths()
    grouped = batch_order(lengths, 25, seed=1, group_by_length=True)
    shuffled = batch_order(lengths, 25, seed=1, group_by_length=False)
    assert _padding(lengths, grouped) < 0.7 * _padding(lengths, shuffled)


def test_batch_order_is_seeded() -> None:
    lengths = _lengths()
    a = batch_order(lengths, 25, seed=7, group_by_length=True)
    assert a == batch_order(lengths, 25, seed=7, group_by_length=True)
    assert a != batch_order(lengths, 25, seed=8, group_by_length=True)


def test_collate_pads_dynamically_or_to_a_fixed_width() -> None:
    batch = collate([[1, 2, 3], [4]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    fixed = collate([[1, 2, 3], [4]], pad_id=9, pad_to=6)
    assert fixed["input_ids"].shape == (2, 6)
    assert fixed["input_ids"][1].tolist() == [4, 9, 9, 9, 9, 9]


def test_class_weights_are_balanced() -> None:
    w = class_weights([1, 1, 1, 0])
    assert w.tolist() == pytest.approx([2.0, 2 / 3])


def test_eval_points_are_spread_over_the_epoch() -> None:
    assert eval_points(10, 1) == {10}
    assert eval_points(10, 2) == {5, 10}
    assert eval_points(3, 5) == {1, 2, 3}


def test_schedule_warms_up_then_decays_to_zero() -> None:
    import torch

    model = torch.nn.Linear(4, 2)
    cfg = TrainSettings(learning_rate=1e-3, warmup_ratio=0.1, class_weighted_loss=True)
    opt = make_optimization(
        model,  # type: ignore[arg-type]
        cfg,
        total_steps=100,
        train_labels=[0, 1, 1, 1],
        device=torch.device("cpu"),
        autocast_dtype=None,
    )
    lrs: list[float] = []
    for _ in range(100):
        lrs.append(opt.current_lr())
        opt.optimizer.step()
        opt.scheduler.step()
    peak = int(np.argmax(lrs))
    assert 8 <= peak <= 11
    assert max(lrs) == pytest.approx(1e-3, rel=0.1)
    assert lrs[-1] < 2e-5
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert opt.loss_weight is not None
    assert opt.loss_weight.tolist() == pytest.approx([2.0, 2 / 3])
    # Biases and other 1-d parameters are not decayed.
    groups = opt.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [cfg.weight_decay, 0.0]
    assert [len(g["params"]) for g in groups] == [1, 1]


def test_no_class_weights_means_plain_cross_entropy() -> None:
    import torch

    opt = make_optimization(
        torch.nn.Linear(2, 2),  # type: ignore[arg-type]
        TrainSettings(class_weighted_loss=False, learning_rate=1e-3),
        total_steps=10,
        train_labels=[0, 1, 1],
        device=torch.device("cpu"),
        autocast_dtype=None,
    )
    assert opt.loss_weight is None


def test_quick_profile_fills_only_what_was_not_given() -> None:
    quick = apply_profile(TrainSettings(profile="quick", epochs=2.0), explicit={"epochs"})
    assert quick.epochs == 2.0
    assert quick.max_length == QUICK_PROFILE["max_length"]
    assert quick.max_samples == QUICK_PROFILE["max_samples"]
    full = TrainSettings()
    assert apply_profile(full, explicit=set()) == full


def test_seed_profile_is_the_notebook_recipe_without_the_new_levers() -> None:
    seed = apply_profile(TrainSettings(profile="seed"), explicit=set())
    assert (seed.base_model, seed.learning_rate, seed.batch_size, seed.epochs) == (
        "bert-base-uncased",
        1e-4,
        25,
        3.0,
    )
    assert (seed.layer_lr_decay, seed.head_lr_scale, seed.label_smoothing) == (1.0, 1.0, 0.0)
    full = TrainSettings()
    assert (full.layer_lr_decay, full.head_lr_scale, full.label_smoothing) != (1.0, 1.0, 0.0)


def test_output_dir_rules(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "new", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(UserError, match="--overwrite"):
        check_output_dir(full, overwrite=False)
    check_output_dir(full, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        check_output_dir(tmp_path / "file", overwrite=True)


def test_staging_dir_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "art"

    def crash() -> None:
        with staging_dir(out, overwrite=False) as tmp:
            (tmp / "half.safetensors").write_text("partial")
            raise RuntimeError("crash mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        crash()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_staging_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staging_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old artifact serves until the new one is done
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_metrics_of_one_class_labels_leave_auc_undefined() -> None:
    m = classification_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]))
    assert m["roc_auc"] is None
    assert m["pr_auc_negative"] is None
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"]["matrix"] == [[0, 0], [1, 2]]


def test_staging_dir_refuses_an_output_that_appeared_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "art"

    def race() -> None:
        with staging_dir(out, overwrite=False) as tmp:
            (tmp / "model.safetensors").write_text("new")
            out.mkdir()
            (out / "someone-else.txt").write_text("theirs")

    with pytest.raises(UserError, match="not empty"):
        race()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert sorted(p.name for p in out.iterdir()) == ["someone-else.txt"]

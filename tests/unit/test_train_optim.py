"""Per-layer learning rates and the weight average (trainer/optim.py, trainer/averaging.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.settings import TrainSettings
from tests.tiny_model import make_tiny_base
from trainer.averaging import WeightAverage
from trainer.optim import make_optimization, parameter_depth


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("bert.embeddings.word_embeddings.weight", 0),
        ("bert.encoder.layer.0.attention.self.query.weight", 1),
        ("bert.encoder.layer.5.output.dense.bias", 6),
        ("roberta.encoder.layer.11.output.LayerNorm.weight", 12),
        ("distilbert.transformer.layer.2.ffn.lin1.weight", 3),
        ("bert.pooler.dense.weight", None),
        ("classifier.weight", None),
    ],
)
def test_parameter_depth(name: str, depth: int | None) -> None:
    assert parameter_depth(name, 12) == depth


def _optimizer_rates(tmp_path: Path, **options: float) -> dict[str, float]:
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(
        str(make_tiny_base(tmp_path / "base", layers=3))
    )
    opt = make_optimization(
        model,
        TrainSettings(learning_rate=1e-4, warmup_ratio=0.0, **options),
        total_steps=10,
        train_labels=[0, 1],
        device=torch.device("cpu"),
        autocast_dtype=None,
    )
    rate_of = {id(p): group["lr"] for group in opt.optimizer.param_groups for p in group["params"]}
    decay_of = {
        id(p): group["weight_decay"]
        for group in opt.optimizer.param_groups
        for p in group["params"]
    }
    named = dict(model.named_parameters())
    assert set(rate_of) == {id(p) for p in named.values()}, "every parameter in one group"
    assert decay_of[id(named["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert decay_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    return {name: rate_of[id(p)] for name, p in named.items()}


def test_layer_decay_and_head_scale_set_each_groups_rate(tmp_path: Path) -> None:
    rates = _optimizer_rates(tmp_path, layer_lr_decay=0.5, head_lr_scale=10.0)
    assert rates["classifier.weight"] == pytest.approx(1e-3)
    assert rates["bert.pooler.dense.weight"] == pytest.approx(1e-3)
    assert rates["bert.encoder.layer.2.attention.self.query.weight"] == pytest.approx(1e-4)
    assert rates["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(5e-5)
    assert rates["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(2.5e-5)
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(1.25e-5)


def test_logged_rate_is_the_top_layers_through_the_schedule(tmp_path: Path) -> None:
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(
        str(make_tiny_base(tmp_path / "base", layers=2))
    )
    opt = make_optimization(
        model,
        TrainSettings(learning_rate=1e-4, warmup_ratio=0.5, layer_lr_decay=0.5, head_lr_scale=4),
        total_steps=4,
        train_labels=[0, 1],
        device=torch.device("cpu"),
        autocast_dtype=None,
    )
    seen = []
    for _ in range(4):
        opt.optimizer.step()
        opt.scheduler.step()
        seen.append(opt.current_lr())
    # Two warm-up steps up to 1e-4, then linear decay to 0 over the other two.
    assert seen == pytest.approx([5e-5, 1e-4, 5e-5, 0.0])


def test_no_decay_and_no_scale_is_one_rate_for_everything(tmp_path: Path) -> None:
    rates = set(_optimizer_rates(tmp_path, layer_lr_decay=1.0, head_lr_scale=1.0).values())
    assert rates == {1e-4}


def test_weight_average_follows_the_live_weights_and_swaps_back() -> None:
    import torch

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average.update()  # first update: effective decay min(0.5, 1/10) = 0.1
    assert average.effective_decay() == pytest.approx(min(0.5, 2 / 11))
    with average.applied():
        assert layer.weight.item() == pytest.approx(0.9)
    assert layer.weight.item() == 1.0
    for _ in range(30):
        average.update()
    with average.applied():
        assert layer.weight.item() == pytest.approx(1.0, abs=1e-6)


def test_weight_average_restores_live_weights_when_the_block_fails() -> None:
    import torch

    layer = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("boom")
    assert layer.weight.item() == 3.0


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_weight_average_rejects_decays_outside_the_open_interval(decay: float) -> None:
    import torch

    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(1, 1), decay)

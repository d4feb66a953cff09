"""`cryptosent train` / `cryptosent evaluate` end to end on a tiny random BERT (CPU, seconds).

The tiny model learns little in a few steps; these tests check the plumbing and the contract
(artifact, report, evaluation through the serving loader, reproducibility), not model quality.
They train, so they live outside tests/unit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptosent.cli import main
from stream.artifact import META_FILE, PICKLE_SUFFIXES, read_meta
from tests.tiny_model import make_tiny_base
from tests.train_cli import FIGURES, FIXTURE, one_error_line, train_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _offline_text_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No language model (deterministic, fast) and no stray .env from the working directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRYPTOSENT_TEXT__LANG_BACKEND", "none")
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("base") / "tiny-bert")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    assert main(train_args(tiny_base, out)) == 0
    return out


# -- the artifact ---------------------------------------------------------------------------------


def test_artifact_is_complete_and_pickle_free(artifact: Path) -> None:
    names = {p.name for p in artifact.iterdir()}
    assert {"config.json", "model.safetensors", META_FILE, "train_log.jsonl", "report"} <= names
    assert "tokenizer.json" in names or "vocab.txt" in names
    assert not [n for n in names if Path(n).suffix in PICKLE_SUFFIXES]
    # Nothing left of the staging directory next to the artifact.
    assert [p.name for p in artifact.parent.iterdir()] == [artifact.name]


def test_metadata_records_what_was_trained(artifact: Path, tiny_base: Path) -> None:
    meta = read_meta(artifact)
    assert meta.base_model == str(tiny_base)
    assert meta.max_length == 32
    assert meta.text.lang_backend == "none"
    assert meta.split_seed == 42
    assert meta.temperature > 0
    assert meta.data is not None
    assert meta.data.csv_name == FIXTURE.name
    assert meta.data.csv_sha256 == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    rows = meta.data.rows
    assert rows["train"] > rows["val"] > 0
    assert rows["test"] > 0
    assert rows["train"] + rows["val"] + rows["test"] < 126  # duplicates, Neutral, empty dropped
    train_opts = meta.train_options["train"]
    assert train_opts["learning_rate"] == 1e-3
    assert train_opts["class_weighted_loss"] is True
    assert meta.train_options["data"]["split_seed"] == 42
    assert {"torch", "transformers"} <= set(meta.library_versions)
    test = meta.metrics["test"]
    assert test["n"] == rows["test"]
    assert 0.0 <= test["macro_f1"] <= 1.0
    assert {"ece_before", "ece_after"} <= set(test)
    assert meta.metrics["baseline_test"]["macro_f1"] is not None


def test_saved_artifact_loads_and_predicts(artifact: Path) -> None:
    from stream.inference import load_model

    model = load_model(artifact, device="cpu")
    probs = model.predict_proba(["ETH to the moon", "sell everything now"], batch_size=2)
    assert probs.shape == (2, 2)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_training_log_has_steps_and_evaluations(artifact: Path) -> None:
    records = [
        json.loads(line)
        for line in (artifact / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    steps = [r for r in records if r["type"] == "step"]
    evals = [r for r in records if r["type"] == "eval"]
    assert steps
    assert evals
    assert {"step", "epoch", "loss", "lr", "samples_per_s"} <= set(steps[0])
    assert {"step", "epoch", "val_loss", "val_macro_f1", "val_accuracy"} <= set(evals[0])
    assert len(evals) == 4  # 2 epochs x 2 evaluations
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    assert records[-1]["type"] == "end"
    assert sum(1 for r in evals if r["best"]) >= 1


def test_report_holds_model_baseline_and_figures(artifact: Path) -> None:
    report = artifact / "report"
    for name in FIGURES:
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["evaluated_on"] == "held-out test split"
    assert metrics["baseline"]["macro_f1"] is not None
    assert metrics["model"]["per_class"]["NEGATIVE"]["support"] > 0
    assert metrics["model"]["calibration"]["n_bins"] == 15
    assert metrics["dataset"]["splits"]["test"] == metrics["model"]["n"]
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "TF-IDF + LR baseline" in text
    assert read_meta(artifact).model_version in text
    # The raw texts' asset distribution, with the map version (trainer/report_assets.py).
    dist = metrics["asset_distribution"]
    assert dist["map_version"] == "1"
    (source,) = dist["sources"].values()
    assert source["posts"] == source["no_asset"] + source["one_asset"] + source["two_or_more"]
    assert "## Assets" in text
    for name in FIGURES:
        assert f"({name})" in text


def test_test_metrics_come_from_the_served_model(artifact: Path) -> None:
    """What is measured is what is served: rescoring the test rows through `load_model` gives
    the recorded accuracy."""
    import numpy as np

    from ops.settings import DataSettings, Settings, TextSettings
    from stream.inference import load_model
    from trainer.dataset import load_splits

    meta = read_meta(artifact)
    settings = Settings(_env_file=None, text=TextSettings(lang_backend="none"), data=DataSettings())
    data = load_splits(FIXTURE, settings, max_samples=None)
    model = load_model(artifact, device="cpu")
    probs = model.predict_proba([t for t, _ in data.test])
    accuracy = float(np.mean(probs.argmax(axis=1) == np.array([y for _, y in data.test])))
    assert accuracy == pytest.approx(meta.metrics["test"]["accuracy"])


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_writes_a_cross_dataset_report(artifact: Path) -> None:
    assert main(["evaluate", "--model", str(artifact), "--csv", str(FIXTURE)]) == 0
    report = artifact / f"report-{FIXTURE.stem}"
    for name in (*FIGURES, "metrics.json", "report.md"):
        assert (report / name).is_file(), name
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["baseline"] is None
    assert "n/a" in metrics["baseline_note"]
    # Every usable row (no split): more than the test split.
    assert metrics["model"]["n"] > read_meta(artifact).metrics["test"]["n"]


def test_evaluate_maps_other_columns_and_labels(artifact: Path, tmp_path: Path) -> None:
    csv = tmp_path / "other.csv"
    csv.write_text(
        "tweet,mood\n"
        + "".join(
            f'"{t}",{m}\n'
            for t, m in [
                ("ETH breaking out, bulls in control", "Bullish"),
                ("BTC crashing, sold everything", "Bearish"),
                ("Buying the dip, very bullish", "Bullish"),
                ("nothing much happening", "Neutral"),
            ]
        ),
        encoding="utf-8",
    )
    out = tmp_path / "rep"
    code = main(
        [
            "evaluate",
            "--model",
            str(artifact),
            "--csv",
            str(csv),
            "--text-column",
            "tweet",
            "--label-column",
            "mood",
            "--label-map",
            "Bullish=Positive,Bearish=Negative",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["n"] == 3


# -- reproducibility ------------------------------------------------------------------------------


def test_existing_output_is_refused_then_overwritten_reproducibly(
    artifact: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = read_meta(artifact)
    assert main(train_args(tiny_base, artifact)) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert read_meta(artifact).model_version == before.model_version
    assert main(train_args(tiny_base, artifact, "--overwrite")) == 0
    after = read_meta(artifact)
    assert after.model_version != before.model_version
    # Same CSV, options and seed: same split, same training, same numbers.
    assert after.data == before.data
    assert after.metrics == before.metrics
    assert after.temperature == before.temperature


# -- several sources ------------------------------------------------------------------------------


def test_two_sources_train_with_per_source_and_cross_domain_reports(
    tmp_path: Path, tiny_base: Path
) -> None:
    other = tmp_path / "other.csv"
    lines = ["body,mood"]
    for i in range(60):
        word, mood = ("soaring", "Bullish") if i % 2 else ("sinking", "Bearish")
        lines.append(f'"market note {i}: shares {word} after the report",{mood}')
    other.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "multi"
    args = train_args(tiny_base, out, "--source-balance", "weight", "--label-smoothing", "0.1")
    args[args.index("--csv") + 1] = f"{FIXTURE}:name=st"
    args[1:1] = ["--csv", f"{other}:text=body,label=mood,map=Bullish=Positive;Bearish=Negative"]
    assert main([*args, "--cross-domain", "--cross-domain-workers", "2"]) == 0

    meta = read_meta(out)
    assert meta.data is not None
    assert meta.data.csv_name == f"other.csv+{FIXTURE.name}"
    assert meta.metrics["per_source"].keys() == {"other", "st"}
    assert [s["name"] for s in meta.train_options["sources"]] == ["other", "st"]
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    cross = metrics["cross_domain"]
    assert cross["sources"] == ["other", "st"]
    trained = [r["trained_on"] for r in cross["model"]]
    assert trained == ["all sources", "only st", "only other"]
    assert [r["trained_on"] for r in cross["baseline"]] == trained
    held_out = cross["model"][1]["test"]["other"]
    assert held_out["held_out"] is True
    assert 0.0 <= held_out["macro_f1"] <= 1.0
    assert metrics["training"]["source_balance"] == "weight"
    text = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Cross-domain" in text
    assert "## Per source" in text
    evals = [
        json.loads(line)
        for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
        if '"eval"' in line
    ]
    assert all("val_mean_source_macro_f1" in e for e in evals)


def test_layer_rates_and_weight_average_are_recorded(tmp_path: Path, tiny_base: Path) -> None:
    out = tmp_path / "averaged"
    extra = ("--layer-lr-decay", "0.5", "--head-lr-scale", "5", "--ema-decay", "0.9")
    assert main(train_args(tiny_base, out, *extra)) == 0
    options = read_meta(out).train_options["train"]
    assert (options["layer_lr_decay"], options["head_lr_scale"], options["ema_decay"]) == (
        0.5,
        5.0,
        0.9,
    )
    records = [
        json.loads(line)
        for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    evals = [r for r in records if r["type"] == "eval"]
    # The averaged weights are what is selected; the live ones are logged beside them.
    assert all({"val_macro_f1", "live_val_macro_f1", "live_val_loss"} <= set(e) for e in evals)
    assert any(e["val_loss"] != e["live_val_loss"] for e in evals)
    first = next(r for r in records if r["type"] == "step")
    assert first["lr"] <= 1e-3  # the top layer's rate, not the head's 5e-3

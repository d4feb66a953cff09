"""The asset distribution of a CSV in `data summary` and the training report (issue 12)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ops.errors import UserError
from ops.settings import DataSettings, Settings
from stream.core.assets import load_asset_map
from tests.unit.test_data import _summary
from trainer.report_assets import (
    asset_markdown,
    csv_asset_summary,
    distribution,
    sources_asset_distribution,
)
from trainer.sources import SourceSpec

POSTS = [
    ("$ETH.X breaking out, Bitcoin lagging", "Bullish"),
    ("$ETH.X and $SOL.X both up", "Bullish"),
    ("$BTC.X dumping hard", "Bearish"),
    ("nothing to see here", "Bearish"),
    ("ethereum gas fees are a joke", "Bearish"),
    ("check out this link, $100 off", "Bullish"),
]


def write(path: Path, text_column: str = "text") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([text_column, "sentiment_label"])
        writer.writerows(POSTS)
    return path


def test_distribution_counts_every_row_read_from_the_raw_text(tmp_path: Path) -> None:
    summary = csv_asset_summary(write(tmp_path / "a.csv"), DataSettings(), load_asset_map(None))
    dist = distribution(summary)
    assert (dist["posts"], dist["no_asset"], dist["one_asset"], dist["two_or_more"]) == (6, 2, 2, 2)
    assert dist["top"] == {"ETH": 3, "BTC": 2, "SOL": 1}
    assert dist["distinct_assets"] == 3


def test_sources_each_read_with_their_own_columns_and_the_configured_map(tmp_path: Path) -> None:
    own = tmp_path / "map.toml"
    own.write_text('version = "mine-2"\n[assets.ETH]\nwords = ["ethereum"]\n', encoding="utf-8")
    settings = Settings.model_validate({"assets": {"map_path": str(own)}})
    specs = [
        SourceSpec(write(tmp_path / "a.csv"), "a"),
        SourceSpec(write(tmp_path / "b.csv", "body"), "b", text_column="body"),
    ]
    dist = sources_asset_distribution(specs, settings)
    assert dist["map_version"] == "mine-2"
    assert set(dist["sources"]) == {"a", "b"}
    assert dist["sources"]["b"]["top"] == {"ETH": 3}
    single = sources_asset_distribution(tmp_path / "a.csv", Settings())
    assert list(single["sources"]) == ["a"]
    lines = asset_markdown(single)
    assert lines[0] == "## Assets"
    assert "`1`" in lines[2]
    row = next(line for line in lines if line.startswith("| a |"))
    assert row == "| a | 6 | 33.3 % | 33.3 % | 33.3 % | ETH 50.0 %, BTC 33.3 %, SOL 16.7 % |"


def test_summary_command_prints_the_asset_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "posts.csv")
    argv = ["--csv", str(path), "--label-map", "Bullish=Positive,Bearish=Negative"]
    # Six rows are too few to split: the report, assets included, is printed before the error.
    with pytest.raises(UserError):
        _summary(argv)
    out = capsys.readouterr().out
    assert "assets (map version 1, raw text of every row read)" in out
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in out.splitlines()}
    assert rows["no asset"] == ["2", "33.3%"]
    assert rows["two or more"] == ["2", "33.3%"]
    assert rows["ETH"] == ["3", "50.0%"]


def test_summary_command_rejects_a_bad_map_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = ", encoding="utf-8")
    with pytest.raises(UserError, match="not valid TOML"):
        _summary(["--csv", str(write(tmp_path / "p.csv")), "--asset-map", str(bad)])

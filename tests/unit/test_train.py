"""`cryptosent train` refusals on a tiny random BERT: everything that must stop before training.

The runs that train live in tests/slow/test_train_cli.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptosent.cli import main
from tests.tiny_model import make_tiny_base
from tests.train_cli import HEADER, one_error_line, train_args


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


# -- refusals -------------------------------------------------------------------------------------


def test_one_class_csv_is_refused(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "positive_only.csv"
    csv.write_text(
        HEADER
        + "".join(
            f"{i},2022-06-25T10:00:00Z,u{i},0,ETH rally number {i} is going to the moon,Positive\n"
            for i in range(60)
        ),
        encoding="utf-8",
    )
    args = train_args(tiny_base, tmp_path / "out")
    args[args.index("--csv") + 1] = str(csv)
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "negative" in line.lower()
    assert not (tmp_path / "out").exists()


def test_too_few_rows_are_refused(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "tiny.csv"
    csv.write_text(
        HEADER
        + "1,2022-06-25T10:00:00Z,a,0,ETH going to the moon today,Positive\n"
        + "2,2022-06-25T10:00:00Z,b,0,BTC crashing hard right now,Negative\n"
        + "3,2022-06-25T10:00:00Z,c,0,SOL breaking resistance nicely,Positive\n",
        encoding="utf-8",
    )
    args = train_args(tiny_base, tmp_path / "out")
    args[args.index("--csv") + 1] = str(csv)
    assert main(args) == 2
    one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


@pytest.mark.parametrize("base", ["no-such-model-xyz", "./missing/dir", "bert-base-uncased"])
def test_unavailable_base_model_is_refused(
    tmp_path: Path, base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if base == "bert-base-uncased" and _in_hf_cache(base):
        pytest.skip("bert-base-uncased is in the local Hugging Face cache here")
    args = train_args(Path(base), tmp_path / "out")
    args[args.index("--base-model") + 1] = base
    assert main(args) == 2
    line = one_error_line(capsys)
    assert base in line
    assert not (tmp_path / "out").exists()


def test_missing_csv_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_default_learning_rate_by_model_size() -> None:
    from trainer.optim import default_learning_rate

    assert default_learning_rate(384) == 1e-4  # MiniLM: the notebook's rate suits it
    assert default_learning_rate(768) == 3e-5  # bert-base: 1e-4 is too high


def test_bad_source_option_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--csv", f"{tmp_path}/a.csv:colour=red", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "colour=red" in one_error_line(capsys)


def test_every_source_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    here = tmp_path / "here.csv"
    here.write_text(HEADER, encoding="utf-8")
    missing = tmp_path / "missing.csv"
    args = ["train", "--csv", str(here), "--csv", f"{missing}:name=m", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "missing.csv" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("value", "why"), [("-1", "must be >= 0"), ("two", "not a whole number")])
def test_cross_domain_workers_must_be_a_count(
    value: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--csv", "x.csv", "--cross-domain-workers", value, "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert why in capsys.readouterr().err.strip().splitlines()[-1]

"""The ONNX Runtime backend, its checksum guard, the quality gate and the `auto` choice, on a tiny
random BERT exported to ONNX (seconds, no training)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ops.errors import UserError
from schemas.messages import Label
from stream.artifact import ArtifactMeta, OnnxFile, read_meta, write_meta
from stream.backends.onnx import FILES, load_onnx_backend, sha256_file
from stream.backends.select import choose_backend, open_backend
from stream.core.planning import Encoded
from stream.inference import load_model
from tests.tiny_model import make_tiny_artifact
from trainer.export import (
    Candidate,
    GateInputs,
    GateSpec,
    export_artifact,
    pick_shipped,
    score_candidate,
)
from trainer.onnx_build import export_graph, sensitive_nodes

TEXTS = [
    "btc to the moon",
    "eth dump incoming, sell now",
    "",
    "bullish " * 40,
    "long eth short btc rally today great profit love it",
    "rekt",
]


def _entry(path: Path, **over: object) -> OnnxFile:
    fields: dict[str, object] = {
        "file": path.name,
        "sha256": sha256_file(path),
        "method": "test",
        "macro_f1": 0.8,
        "macro_f1_delta": 0.0,
        "agreement": 1.0,
        "gate_passed": True,
    }
    fields.update(over)
    return OnnxFile.model_validate(fields)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny artifact with a raw fp32 export registered in its metadata."""
    directory = make_tiny_artifact(tmp_path_factory.mktemp("onnx") / "tiny", max_length=32)
    path = directory / FILES["fp32"]
    export_graph(directory, path)
    meta = read_meta(directory)
    write_meta(directory, meta.model_copy(update={"onnx": {"fp32": _entry(path)}}))
    return directory


@pytest.fixture
def artifact_copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "copy"))


def test_onnx_logits_match_torch_with_dynamic_padding(exported: Path) -> None:
    torch_model = load_model(exported, device="cpu", precision="fp32")
    onnx = load_onnx_backend(exported, "fp32", threads=1)
    encoded = onnx.encode(TEXTS)
    assert encoded.input_ids == torch_model.encode(TEXTS).input_ids
    assert max(encoded.lengths) == 32  # truncated at the artifact's max_length
    # Padding a short row to a long batch must not change its logits (attention mask honoured).
    together = onnx.forward_logits(encoded.input_ids)
    alone = np.concatenate([onnx.forward_logits([ids]) for ids in encoded.input_ids])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(together, torch_model.forward_logits(encoded.input_ids), atol=1e-4)
    assert together.shape == (len(TEXTS), 2)
    assert together.dtype == np.float32
    assert onnx.name == "onnx-fp32"
    assert onnx.model_version == torch_model.model_version
    assert onnx.labels == torch_model.labels
    assert onnx.temperature == torch_model.temperature
    assert 0 < onnx.call_overhead_tokens < torch_model.call_overhead_tokens
    assert onnx.encode([]) == Encoded([])
    planned = list(onnx.iter_planned(encoded, 4, by_cost=True))
    assert sorted(i for idx, _ in planned for i in idx) == list(range(len(TEXTS)))
    assert all(len(ids) <= 4 for _, ids in planned)


def test_a_changed_file_is_refused_with_one_line(artifact_copy: Path) -> None:
    with (artifact_copy / FILES["fp32"]).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError) as info:
        load_onnx_backend(artifact_copy, "fp32")
    assert "does not match" in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_a_missing_file_or_variant_is_refused(artifact_copy: Path) -> None:
    with pytest.raises(UserError, match="no ONNX int8 model"):
        load_onnx_backend(artifact_copy, "int8")
    (artifact_copy / FILES["fp32"]).unlink()
    with pytest.raises(UserError, match="file is missing"):
        load_onnx_backend(artifact_copy, "fp32")


def test_a_file_that_failed_the_gate_is_refused(artifact_copy: Path) -> None:
    meta = read_meta(artifact_copy)
    failed = meta.onnx["fp32"].model_copy(update={"gate_passed": False})
    write_meta(artifact_copy, meta.model_copy(update={"onnx": {"fp32": failed}}))
    with pytest.raises(UserError, match="failed the quality gate"):
        load_onnx_backend(artifact_copy, "fp32")


def test_old_artifacts_without_onnx_fields_still_load(tmp_path: Path) -> None:
    directory = make_tiny_artifact(tmp_path / "old")
    meta_path = directory / "cryptosent.json"
    assert '"onnx"' in meta_path.read_text(encoding="utf-8")
    raw = ArtifactMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
    legacy = raw.model_dump_json(exclude={"onnx"})
    assert '"onnx"' not in legacy
    meta_path.write_text(legacy, encoding="utf-8")
    assert read_meta(directory).onnx == {}
    assert choose_backend("auto", False, read_meta(directory))[0] == "torch"


def test_load_backend_builds_either_kind(exported: Path) -> None:
    assert open_backend("onnx", exported, threads=1).name == "onnx-fp32"
    assert open_backend("torch", exported, device="cpu").name == "torch-cpu-fp32"


# -- the auto choice ------------------------------------------------------------------------------


def _meta(*variants: str, passed: bool = True) -> ArtifactMeta:
    entry = OnnxFile(
        file="f",
        sha256="0" * 64,
        method="m",
        macro_f1=0.8,
        macro_f1_delta=-0.004,
        agreement=0.99,
        gate_passed=passed,
    )
    meta = ArtifactMeta.model_validate(
        {"model_version": "v", "text": {}, "max_length": 64, "base_model": "b"}
    )
    return meta.model_copy(update={"onnx": dict.fromkeys(variants, entry)})


@pytest.mark.parametrize(
    ("variants", "cuda", "expected"),
    [
        (("fp32", "int8"), True, "torch"),
        (("fp32", "int8"), False, "onnx-int8"),
        (("fp32",), False, "onnx"),
        ((), False, "torch"),
        ((), True, "torch"),
    ],
)
def test_auto_prefers_gpu_then_the_best_gated_onnx(
    variants: tuple[str, ...], cuda: bool, expected: str
) -> None:
    name, reason = choose_backend("auto", cuda, _meta(*variants))
    assert name == expected
    assert reason.startswith("auto:")


def test_auto_skips_files_that_failed_the_gate() -> None:
    assert choose_backend("auto", False, _meta("fp32", "int8", passed=False))[0] == "torch"


def test_explicit_choices_are_honoured_or_refused() -> None:
    assert choose_backend("torch", False, _meta()) == ("torch", "requested --backend torch")
    assert choose_backend("onnx-int8", True, _meta("int8"))[0] == "onnx-int8"
    assert choose_backend("onnx", False, _meta("fp32"))[0] == "onnx"
    with pytest.raises(UserError, match="no gated ONNX int8"):
        choose_backend("onnx-int8", False, _meta("fp32"))
    with pytest.raises(UserError, match="unknown backend"):
        choose_backend("tensorrt", False, _meta())  # type: ignore[arg-type]


# -- the gate -------------------------------------------------------------------------------------


class _FixedLogits:
    """A backend whose every call returns preset logits for the rows it is given."""

    name = "fake"
    model_version = "v"
    labels: Sequence[Label] = (Label.NEGATIVE, Label.POSITIVE)
    temperature = 1.0
    call_overhead_tokens = 10.0

    def __init__(self, logits: np.ndarray) -> None:
        self._by_first_token = dict(enumerate(logits))

    def encode(self, texts: Sequence[str]) -> Encoded:
        return Encoded([[i] for i in range(len(texts))])

    def forward_logits(self, batch_ids: Sequence[Sequence[int]]) -> np.ndarray:
        return np.stack([self._by_first_token[ids[0]] for ids in batch_ids])


def _logits(pred: list[int]) -> np.ndarray:
    return np.array([[1.0, 0.0] if p == 0 else [0.0, 1.0] for p in pred], dtype=np.float32)


@pytest.mark.parametrize(
    ("flips", "gate", "passes"),
    [
        (0, GateSpec(), True),
        (1, GateSpec(max_f1_drop=0.02, min_agreement=0.95), True),  # drop 0.0099 over 100 rows
        (3, GateSpec(max_f1_drop=0.01, min_agreement=0.9), False),  # F1 drop too large
        (3, GateSpec(max_f1_drop=1.0, min_agreement=0.98), False),  # agreement too low
    ],
)
def test_the_gate_scores_f1_drop_and_agreement(flips: int, gate: GateSpec, passes: bool) -> None:
    labels = np.array([0] * 50 + [1] * 50)
    reference = _logits(list(labels))
    pred = list(labels)
    for i in range(flips):
        pred[i] = 1  # correct negatives turned positive
    cand = Candidate("c", "int8", "m")
    ids = [[i] for i in range(len(labels))]
    score_candidate(
        cand,
        backend=_FixedLogits(_logits(pred)),
        ids=ids,
        labels=labels,
        reference=reference,
        reference_f1=1.0,
        gate=gate,
    )
    assert cand.agreement == pytest.approx(1 - flips / 100)
    assert (cand.macro_f1_delta < 0) == (flips > 0)
    assert cand.passed is passes
    assert cand.ms_per_tweet > 0


def _cand(key: str, variant: str, ms: float, passed: bool = True) -> Candidate:
    return Candidate(key, variant, "m", ms_per_tweet=ms, passed=passed)  # type: ignore[arg-type]


def test_pick_ships_the_fastest_passing_file_and_int8_only_when_faster() -> None:
    picked = pick_shipped(
        [
            _cand("fp32", "fp32", 5.0),
            _cand("fused", "fp32", 6.0),
            _cand("naive", "int8", 1.0, passed=False),
            _cand("keep", "int8", 2.0),
            _cand("static", "int8", 3.0),
        ]
    )
    assert {k: c.key for k, c in picked.items()} == {"fp32": "fp32", "int8": "keep"}
    slow = pick_shipped([_cand("fp32", "fp32", 5.0), _cand("keep", "int8", 4.8)])
    assert set(slow) == {"fp32"}  # int8 within the noise margin of fp32 is not worth shipping
    equal = pick_shipped([_cand("fp32", "fp32", 5.0), _cand("fused", "fp32", 4.7)])
    assert equal["fp32"].key == "fp32"
    faster = pick_shipped([_cand("fp32", "fp32", 5.0), _cand("fused", "fp32", 4.0)])
    assert faster["fp32"].key == "fused"
    assert pick_shipped([_cand("keep", "int8", 1.0)]) == {}
    assert pick_shipped([_cand("fp32", "fp32", 5.0, passed=False)]) == {}


def test_sensitive_nodes_keep_head_and_edge_layers(exported: Path) -> None:
    keep = sensitive_nodes(exported / FILES["fp32"])
    head = sensitive_nodes(exported / FILES["fp32"], edge_layers=False)
    assert any("classifier" in n for n in head)
    assert any("pooler" in n for n in head)
    assert set(head) < set(keep)
    assert any("layer.0" in n for n in keep)
    assert any("layer.1" in n for n in keep)


def test_export_writes_only_gated_files_with_checksums(tmp_path: Path) -> None:
    directory = make_tiny_artifact(tmp_path / "tiny", max_length=32)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(TEXTS[:2] + TEXTS[3:], size=2)) for _ in range(40)]
    inputs = GateInputs(
        test_texts=texts,
        test_labels=rng.integers(0, 2, size=len(texts)),
        calibration_texts=texts[:16],
    )
    meta = export_artifact(directory, read_meta(directory), inputs, threads=1)
    write_meta(directory, meta)
    quality = meta.metrics["onnx_gate"]
    assert len(quality["candidates"]) >= 5
    assert all("ms_per_tweet" not in c for c in quality["candidates"])  # reproducible metrics
    figures = json.loads((directory / "report" / "onnx_gate.json").read_text(encoding="utf-8"))
    assert figures["shipped"]["fp32"] in ("fp32", "fp32-fused")
    assert all(c["ms_per_tweet"] > 0 for c in figures["candidates"] if not c["error"])
    for variant, entry in meta.onnx.items():
        assert entry.gate_passed
        assert entry.sha256 == sha256_file(directory / entry.file)
        assert -entry.macro_f1_delta <= 0.01 + 1e-9
        assert entry.agreement >= 0.97
        load_onnx_backend(directory, variant)  # type: ignore[arg-type]
    assert (directory / FILES["int8"]).exists() == ("int8" in meta.onnx)
    report = (directory / "report" / "onnx_gate.md").read_text(encoding="utf-8")
    assert "| int8-dyn-pc-keep |" in report
    assert "torch-cpu-fp32" in report


def test_export_command_refuses_a_missing_csv(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptosent.cli import main

    assert main(["export", "--model", str(exported), "--csv", "/nonexistent.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: CSV /nonexistent.csv does not exist"]

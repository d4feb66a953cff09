"""bench/onnx_base_model.py: a BERT encoder exported to ONNX (as in the langchain4j jars) becomes a
base-model directory with the same weights, and a wrong guess of its shape is refused."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import onnx_base_model as converter  # noqa: E402

from tests.tiny_model import make_tiny_base  # noqa: E402
from trainer.base_model import load_base_model, resolve_base_model  # noqa: E402


@pytest.fixture(scope="module")
def encoder_jar(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Any]:
    """A tiny random BertModel exported the way Hugging Face exports encoders, zipped with its
    tokenizer.json the way the langchain4j jars ship them (exported once for the module)."""
    import torch

    tmp_path = tmp_path_factory.mktemp("jar")
    from transformers import BertModel, BertTokenizerFast

    base = make_tiny_base(tmp_path / "base", layers=2, hidden=32)

    class _Hidden(BertModel):
        # transformers 5's forward takes no positional mask; the export passes three tensors.
        def forward(self, ids: Any, mask: Any, types: Any) -> Any:  # type: ignore[override]
            hidden = super().forward(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return hidden.last_hidden_state

    encoder = _Hidden.from_pretrained(str(base), add_pooling_layer=False).eval()
    # Fresh BERTs have all-zero biases, which the exporter would merge into one initializer;
    # trained encoders never do.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    tokenizer = BertTokenizerFast.from_pretrained(str(base))
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    onnx_path = tmp_path / "encoder.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    with torch.inference_mode():
        torch.onnx.export(
            encoder,
            sample,
            str(onnx_path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
            opset_version=17,
            dynamo=False,
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as jar:
        jar.writestr("README", "test")
        jar.writestr("tiny.onnx", onnx_path.read_bytes())
        jar.writestr("tiny-tokenizer.json", (tmp_path / "tok" / "tokenizer.json").read_bytes())
    return buffer.getvalue(), encoder


def test_converted_directory_has_the_exported_weights_and_loads_as_a_base(
    tmp_path: Path, encoder_jar: tuple[bytes, Any]
) -> None:
    import torch

    jar, encoder = encoder_jar
    onnx_bytes, tokenizer_json = converter.read_jar(jar)
    out = tmp_path / "converted"
    diff = converter.build(onnx_bytes, tokenizer_json, out, heads=2)
    assert diff <= converter.TOLERANCE

    model, tokenizer = load_base_model(resolve_base_model(str(out)))
    converted = model.bert.state_dict()  # type: ignore[attr-defined]
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(converted[name], tensor), name
    assert model.config.num_labels == 2
    assert tokenizer("eth pump")["input_ids"][0] == tokenizer.cls_token_id


def test_a_wrong_head_count_is_refused_before_anything_is_written(
    tmp_path: Path, encoder_jar: tuple[bytes, Any]
) -> None:
    jar, _ = encoder_jar
    onnx_bytes, tokenizer_json = converter.read_jar(jar)
    out = tmp_path / "converted"
    with pytest.raises(SystemExit, match="differ"):
        converter.build(onnx_bytes, tokenizer_json, out, heads=4)
    assert not out.exists()


def test_a_jar_without_one_model_is_refused() -> None:
    with pytest.raises(SystemExit, match="not a jar"):
        converter.read_jar(b"<html>not found</html>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as jar:
        jar.writestr("README", "no model here")
    with pytest.raises(SystemExit, match=r"one \.onnx"):
        converter.read_jar(buffer.getvalue())

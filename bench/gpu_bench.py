"""Prove and tune the CUDA path: correctness, training and inference throughput, serve end to
end, memory and the out-of-memory fallback. One JSON (`gpu_bench.json`) and one markdown table
(`gpu_bench.md`) per run. Run it through `bash bench/gpu.sh` (docs/performance.md).

The measurements live in bench/gpu/, one module per step; this file is the entry point.

Steps (each timed and guarded: one failing step never loses the others' figures):
  1 correctness  bf16 autocast probabilities vs fp32 CPU on the same inputs and weights
  2 training     samples/s, notebook setting (pad to 128) vs ours (length-grouped dynamic padding)
  3 inference    tweets/s of `SentimentModel.forward_logits` on serve-planned batches: the ceiling
  4 serve        `StreamWorker` end to end on the embedded broker, ratio to the ceiling, stages
  5 memory       peak GPU memory at the largest batch; forced OOM -> split-and-retry is exact

Models are random-initialised from BertConfig with the real shapes (nothing is downloaded);
`--quick` swaps in tiny shapes and sizes so that a CPU runs every code path in under 2 minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/gpu_bench.py` puts bench/ on the path already; an import from elsewhere may not.
BENCH = str(Path(__file__).resolve().parent)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from gpu.main import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())

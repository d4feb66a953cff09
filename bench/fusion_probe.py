"""Late fusion of a fine-tuned artifact with the TF-IDF + LR baseline, scored on validation splits:
the ceiling of a hybrid model, one more lever probed for issue 13 and not kept
(docs/training.md, "Levers").

    python bench/fusion_probe.py /tmp/probe    # an artifact from `train_lever_probe.py probe`

The baseline is fitted the way the trainer fits it (trainer.baseline.run_baseline): on the train
splits of the sources the artifact was trained on, with its features and C picked on their
validation splits. Each source's validation macro-F1 is then computed for the mix
a * p_model + (1 - a) * p_baseline over a grid of a. The best a is picked on the very split it is
scored on, so the figure is a ceiling, not an estimate. Appends one record to
bench/results/train_lever_probe.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ALPHAS = tuple(i / 10 for i in range(11))


def fusion_curve(
    truth: Any, p_model: Any, p_baseline: Any, alphas: tuple[float, ...] = ALPHAS
) -> dict[float, float]:
    """Macro-F1 of the argmax of each convex mix of the two probability matrices."""
    from sklearn.metrics import f1_score

    return {
        a: round(
            float(f1_score(truth, (a * p_model + (1 - a) * p_baseline).argmax(1), average="macro")),
            4,
        )
        for a in alphas
    }


def fuse(artifact: Path, threads: int) -> int:
    import numpy as np
    from train_lever_probe import _record, _splits

    from stream.backends.torch_backend import load_model
    from trainer.baseline import run_baseline

    served = load_model(artifact, device="cpu", num_threads=threads)
    trained_on = [s["name"] for s in served.meta.train_options.get("sources", [])]
    _, data = _splits()
    own = data.subset(trained_on)
    if not own.sources:
        raise SystemExit(f"error: {artifact} was trained on none of {', '.join(data.names)}")
    scored = [row for s in data.sources for row in s.val]
    baseline = run_baseline(
        [r for s in own.sources for r in s.train], [r for s in own.sources for r in s.val], scored
    )
    record: dict[str, Any] = {
        "kind": "fusion",
        "artifact": str(artifact),
        "trained_on": trained_on,
        "baseline": f"{baseline.features}, C={baseline.c}",
        "val_macro_f1": {},
    }
    start = 0
    for source in data.sources:
        rows = source.val
        truth = np.array([y for _, y in rows])
        p_base = baseline.test_probs[start : start + len(rows)]
        start += len(rows)
        p_model = served.predict_proba([t for t, _ in rows], batch_size=64)
        curve = fusion_curve(truth, p_model, p_base)
        best = max(curve, key=lambda a: (curve[a], -abs(a - 0.5)))
        record["val_macro_f1"][source.name] = {
            "model": curve[1.0],
            "baseline": curve[0.0],
            "mix_0.5": curve[0.5],
            "best_alpha": best,
            "best": curve[best],
        }
    _record(record)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("artifact", type=Path)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not (args.artifact / "cryptosent.json").is_file():
        print(f"error: {args.artifact} is not a cryptosent artifact", file=sys.stderr)
        return 1
    return fuse(args.artifact, args.threads)


if __name__ == "__main__":
    sys.exit(main())

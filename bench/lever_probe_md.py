"""The markdown beside bench/results/train_lever_probe.json: every recorded lever probe, one
table per kind, validation macro-F1 only."""

from __future__ import annotations

import argparse
from typing import Any

# The sources every probe is scored on, in column order.
SOURCE_NAMES = ("stocktwits", "tfn")


def _train_flags(args: list[str]) -> argparse.Namespace:
    """The flags of a recorded `cryptosent train` command that label a run, parsed as train
    parses them (`--csv=PATH` included)."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--csv", action="append", default=[])
    flags.add_argument("--base-model", default="minilm")
    return flags.parse_known_args(args)[0]


def _source_label(spec: str) -> str:
    """A source's name; for any other than the scored ones (a pseudo-labeled CSV), its file
    too, since several such files share a name."""
    from trainer.sources import parse_source

    source = parse_source(spec)
    return source.name if source.name in SOURCE_NAMES else f"{source.name} ({source.path.name})"


def markdown(runs: list[dict[str, Any]]) -> str:
    """Every recorded run, one table per kind; validation macro-F1 only."""
    names = SOURCE_NAMES
    out = ["# Lever probes (validation macro-F1; bench/train_lever_probe.py)", ""]
    out += ["## Fine-tuned probes", ""]
    out += ["| trained on | base model | head | " + " | ".join(names) + " | seconds | date |"]
    out += ["|---|---|---|" + "---|" * len(names) + "---|---|"]
    for r in (r for r in runs if r["kind"] == "probe"):
        flags = _train_flags(r["args"])
        trained = " + ".join(_source_label(c) for c in flags.csv) or "?"
        head = "mean pooling" if r["mean_pool"] else "[CLS] + pooler"
        cells = " | ".join(str(r.get(f"val_macro_f1_{n}", "")) for n in names)
        out.append(
            f"| {trained} | {flags.base_model} | {head} | {cells} | {r['seconds']} | {r['date']} |"
        )
    out += ["", "## Masked-LM adaptation", ""]
    out += ["| out | texts | steps | lr | head-only share | MLM loss first / last 50 | seconds |"]
    out += ["|---|---|---|---|---|---|---|"]
    for r in (r for r in runs if r["kind"] == "adapt"):
        out.append(
            f"| {r['out']} | {r['texts']} | {r['steps']} | {r['lr']} | {r['head_only_share']} "
            f"| {r['mlm_loss_first_50']} / {r['mlm_loss_last_50']} | {r['seconds']} |"
        )
    out += ["", "## Pseudo-labels (self-training, step one)", ""]
    out += ["| teacher | out | texts | kept | share | labels | min confidence |"]
    out += ["|---|---|---|---|---|---|---|"]
    for r in (r for r in runs if r["kind"] == "pseudo_label"):
        labels = ", ".join(f"{k} {v}" for k, v in sorted(r["labels"].items()))
        out.append(
            f"| {r['teacher']} | {r['out']} | {r['texts']} | {r['kept']} | {r['share']} "
            f"| {labels} | {r['min_confidence']} |"
        )
    out += ["", "## Late fusion with the TF-IDF + LR baseline (bench/fusion_probe.py)", ""]
    out += ["The best mix is picked on the split it is scored on: a ceiling.", ""]
    out += [
        "| artifact | trained on | baseline | scored on | model | baseline | mix 0.5 | best mix |"
    ]
    out += ["|---|---|---|---|---|---|---|---|"]
    for r in (r for r in runs if r["kind"] == "fusion"):
        for source, f in r["val_macro_f1"].items():
            out.append(
                f"| {r['artifact']} | {' + '.join(r['trained_on'])} | {r['baseline']} | {source} "
                f"| {f['model']} | {f['baseline']} | {f['mix_0.5']} "
                f"| {f['best']} (a = {f['best_alpha']}) |"
            )
    out += ["", "## Linear probe on frozen features", ""]
    out += ["| features, C, trained on -> scored on | macro-F1 |", "|---|---|"]
    for r in (r for r in runs if r["kind"] == "linear_probe"):
        out += [f"| {k} | {v} |" for k, v in r["val_macro_f1"].items()]
    return "\n".join(out) + "\n"

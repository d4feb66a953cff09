"""What the ONNX quality gate writes: the markdown table (`report/onnx_gate.md`) and the
deterministic part that goes into `cryptosent.json`. Pure: figures in, text or dicts out."""

from __future__ import annotations

from typing import Any


def quality_only(figures: dict[str, Any]) -> dict[str, Any]:
    """The gate's deterministic part for cryptosent.json: same data and weights, same figures
    (timings, and so the speed-based choice of files, live in report/onnx_gate.*)."""
    timing = {"ms_per_tweet"}
    return {
        "split": figures["split"],
        "n": figures["n"],
        "gate": figures["gate"],
        "reference_macro_f1": figures["reference"]["macro_f1"],
        "candidates": [
            {k: v for k, v in c.items() if k not in timing} for c in figures["candidates"]
        ],
    }


def gate_markdown(figures: dict[str, Any]) -> str:
    ref = figures["reference"]
    gate = figures["gate"]
    lines = [
        "# ONNX quality gate",
        "",
        f"Reference: {ref['backend']} on the held-out {figures['split']} split "
        f"(n={figures['n']}): macro-F1 {ref['macro_f1']:.4f}, {ref['ms_per_tweet']:.3f} ms/tweet "
        f"({figures['threads']} thread, serve's planner).",
        f"Gate: macro-F1 drop <= {gate['max_f1_drop']} and argmax agreement >= "
        f"{gate['min_agreement']}. Shipped: "
        + (", ".join(f"{v} = `{k}`" for v, k in figures["shipped"].items()) or "nothing"),
        "",
        "| candidate | method | macro-F1 | delta | agreement | ms/tweet | speed vs torch | gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in figures["candidates"]:
        if c["error"]:
            lines.append(f"| {c['key']} | {c['method']} | | | | | | error: {c['error']} |")
            continue
        speed = ref["ms_per_tweet"] / c["ms_per_tweet"] if c["ms_per_tweet"] else 0.0
        lines.append(
            f"| {c['key']} | {c['method']} | {c['macro_f1']:.4f} | {c['macro_f1_delta']:+.4f} | "
            f"{c['agreement']:.4f} | {c['ms_per_tweet']:.3f} | {speed:.2f}x | "
            f"{'pass' if c['passed'] else 'fail'} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["gate_markdown", "quality_only"]

"""Targets, the JSON and the markdown table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu.common import (
    TARGET_AGREEMENT,
    TARGET_SERVE_RATIO,
    TARGET_SERVE_TPS,
    TARGET_TRAIN_SPEEDUP,
    micro_default,
)

if TYPE_CHECKING:
    pass


# -- targets, results, markdown ------------------------------------------------------------------


def _status(ok: bool | None, on_gpu: bool) -> str:
    if not on_gpu:
        return "n/a (cpu dry run)"
    if ok is None:
        return "n/a (not measured)"
    return "PASS" if ok else "FAIL"


def evaluate_targets(steps: dict[str, dict[str, Any]], on_gpu: bool) -> list[dict[str, Any]]:
    serve = steps.get("serve", {})
    procs = steps.get("serve_procs", {})
    training = steps.get("training", {})
    correctness = steps.get("correctness", {})
    tps = serve.get("tweets_per_s")
    ratio = serve.get("ratio_to_ceiling")
    speedup = training.get("speedup")
    agreement = correctness.get("bf16_label_agreement")
    bs = serve.get("batch_size")

    def check(value: float | None, target: float) -> bool | None:
        return None if value is None else value >= target

    return [
        {
            "target": f"serve bert-base bf16 >= {TARGET_SERVE_TPS:,.0f} tweets/s (one H100/H200)",
            "measured": tps,
            "status": _status(check(tps, TARGET_SERVE_TPS), on_gpu),
        },
        {
            "target": f"serve, {procs.get('processes', 'several')} processes on the card, >= "
            f"{TARGET_SERVE_TPS:,.0f} tweets/s",
            "measured": procs.get("tweets_per_s"),
            "status": _status(check(procs.get("tweets_per_s"), TARGET_SERVE_TPS), on_gpu),
        },
        {
            "target": f"serve >= {TARGET_SERVE_RATIO} of the inference ceiling at batch {bs}",
            "measured": ratio,
            "status": _status(check(ratio, TARGET_SERVE_RATIO), on_gpu),
        },
        {
            "target": f"training dynamic padding >= {TARGET_TRAIN_SPEEDUP}x fixed-128",
            "measured": speedup,
            "status": _status(check(speedup, TARGET_TRAIN_SPEEDUP), on_gpu),
        },
        {
            "target": f"bf16 label agreement >= {TARGET_AGREEMENT:.1%} vs fp32 CPU",
            "measured": agreement,
            "status": _status(check(agreement, TARGET_AGREEMENT), on_gpu),
        },
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-2:
            return f"{value:.2e}"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.extend("| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows)
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    steps = results.get("steps", {})
    out = [
        "# GPU benchmark",
        "",
        f"- date: {meta.get('date')}, mode: {meta.get('mode')}, device: {meta.get('device_name')}",
        f"- torch {meta.get('torch')}, transformers {meta.get('transformers')}, "
        f"python {meta.get('python')}; inputs: {meta.get('inputs')}",
        f"- wall time: {_fmt(results.get('wall_seconds'))} s",
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured", "status"],
            [[t["target"], t["measured"], t["status"]] for t in results.get("targets", [])],
        ),
        "",
        "## Steps",
        "",
        *_table(
            ["step", "status", "seconds", "detail"],
            [
                [name, s.get("status"), s.get("seconds"), s.get("error") or s.get("reason") or ""]
                for name, s in steps.items()
            ],
        ),
    ]
    corr = steps.get("correctness", {})
    if corr.get("runs"):
        out += ["", "### 1. Correctness (reference: fp32 CPU)", ""]
        out += _table(
            [
                "model",
                "candidate",
                "n",
                "max abs dp",
                "mean abs dp",
                "label agreement",
                "pos share",
            ],
            [
                [
                    r["model"],
                    r["candidate"],
                    r["n"],
                    r["max_abs_prob_diff"],
                    r["mean_abs_prob_diff"],
                    r["label_agreement"],
                    r["positive_share"],
                ]
                for r in corr["runs"]
            ],
        )
    train = steps.get("training", {})
    if train.get("fixed_128"):
        out += [
            "",
            f"### 2. Training ({train.get('shape')}, batch {train.get('batch_size')}, "
            f"{train.get('autocast')})",
            "",
        ]
        out += _table(
            ["setting", "samples/s", "steps", "padding share"],
            [
                [
                    "notebook: pad to 128",
                    train["fixed_128"].get("samples_per_s"),
                    train["fixed_128"].get("steps"),
                    train["fixed_128"].get("padding_share"),
                ],
                [
                    "ours: grouped, dynamic",
                    train["dynamic_grouped"].get("samples_per_s"),
                    train["dynamic_grouped"].get("steps"),
                    train["dynamic_grouped"].get("padding_share"),
                ],
                ["speedup", train.get("speedup"), None, None],
            ],
        )
    inf = steps.get("inference", {})
    if inf.get("points"):
        out += ["", "### 3. Inference ceiling (tweets/s)", ""]

        def micro(p: dict[str, Any]) -> str:
            size = p.get("micro_batch")
            default = micro_default(p["batch_size"])
            return "serve default" if size in (None, default) else str(size)

        combos = sorted({(p["shape"], p["precision"], micro(p)) for p in inf["points"]})
        sizes = sorted({p["batch_size"] for p in inf["points"]})
        by = {(p["shape"], p["precision"], micro(p), p["batch_size"]): p for p in inf["points"]}
        out += _table(
            ["model", "precision", "micro-batch", *[f"bs {b}" for b in sizes]],
            [
                [s, prec, m, *[by.get((s, prec, m, b), {}).get("tweets_per_s") for b in sizes]]
                for s, prec, m in combos
            ],
        )
        ab = inf.get("attention_ab", {})
        if "speedup" in ab:
            out += [
                "",
                f"Attention A/B (bert-base bf16, bs {ab['batch_size']}, same batches): torch's "
                f"default SDPA choice {_fmt(ab['torch_default_sdpa']['tweets_per_s'])} tweets/s, "
                f"cuDNN attention left out (serve, trainer) "
                f"{_fmt(ab['cudnn_left_out']['tweets_per_s'])}: {_fmt(ab['speedup'])}x.",
            ]
    serve = steps.get("serve", {})
    if serve.get("tweets_per_s") is not None:
        out += [
            "",
            f"### 4. Serve end to end ({serve.get('tweets')} tweets, batch "
            f"{serve.get('batch_size')}, {serve.get('precision')})",
            "",
        ]
        stages = serve.get("stage_us_per_tweet", {})
        out += _table(
            ["tweets/s", "ceiling", "ratio", *[f"{k} us/tweet" for k in stages]],
            [
                [
                    serve.get("tweets_per_s"),
                    serve.get("ceiling_tweets_per_s"),
                    serve.get("ratio_to_ceiling"),
                    *stages.values(),
                ]
            ],
        )
        out += [
            "",
            f"Bottleneck thread: {serve.get('bottleneck')}; rate each thread allows (tweets/s): "
            f"{serve.get('thread_bound_tweets_per_s')}; group join wait "
            f"{_fmt(serve.get('join_wait_s'))} s (not counted); text cleaning in "
            f"{_fmt(serve.get('prep_processes'))} worker processes (0: in the prep thread).",
        ]
    procs = steps.get("serve_procs", {})
    if procs.get("tweets_per_s") is not None:
        out += [
            "",
            f"### 6. Serve, {procs['processes']} processes on one card ({procs['consumed']} "
            f"tweets, batch {procs['batch_size']}, {procs['precision']}, "
            f"{procs['partitions']} partitions)",
            "",
        ]
        out += _table(
            ["tweets/s", "span s", "cleaning processes each", "per member: tweets", "device us"],
            [
                [
                    procs["tweets_per_s"],
                    procs["span_seconds"],
                    procs["cleaning_processes_each"],
                    " / ".join(str(m["consumed"]) for m in procs["members"]),
                    " / ".join(_fmt(m["device_us_per_tweet"]) for m in procs["members"]),
                ]
            ],
        )
    mem = steps.get("memory", {})
    if mem.get("memory"):
        out += ["", f"### 5. Memory ({mem.get('precision')}) and forced OOM", ""]
        out += _table(
            ["batch", "peak allocated MiB", "activations MiB"],
            [
                [m["batch"], m.get("peak_allocated_mib"), m.get("activations_mib")]
                for m in mem["memory"]
            ],
        )
        oom = mem.get("forced_oom", {})
        out += [
            "",
            f"Forced OOM above {oom.get('limit')} rows: {oom.get('rows_in')} rows in, "
            f"{oom.get('rows_out')} out, {oom.get('oom_splits')} splits, max |dp| "
            f"{_fmt(oom.get('max_abs_prob_diff'))}, ok: {_fmt(oom.get('ok'))}.",
        ]
    return "\n".join(out) + "\n"


def write_results(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "gpu_bench.json", out / "gpu_bench.md"
    # Write-then-rename: a run killed mid-step still leaves the last complete file.
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(json_path)
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path

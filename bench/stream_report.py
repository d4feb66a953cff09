"""bench/stream_throughput.py's analysis of where serve's time goes, and its markdown report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_FORWARD = "stream-infer (forward + softmax)"


def closing_analysis(best: dict[str, Any], naive: dict[str, Any]) -> dict[str, Any]:
    """Per stage, what the best backend's serve spends per tweet, which thread bounds it, and how
    much the forward stage would have to shrink for serve to reach 10x naive, in wall time and
    in CPU time (CPU time holds on a shared machine, where wall time depends on the others)."""
    serve = best["serve"]
    bounds = serve["thread_bound_tweets_per_s"]
    wall_budget = 1e6 / (10.0 * naive["rate"])
    cpu_budget = 1e6 / (10.0 * naive["cpu_rate"])
    cpu_stages = serve["stage_cpu_us_per_tweet"]
    serve_cpu = 1e6 / serve["cpu_rate"]
    forward_cpu = cpu_stages.get("forward", 0.0)
    rest_cpu = serve_cpu - forward_cpu
    return {
        "stage_us_per_tweet": serve["stage_us_per_tweet"],
        "stage_cpu_us_per_tweet": cpu_stages,
        "thread_busy_share": serve["thread_busy_share"],
        "bottleneck_thread": min(bounds, key=lambda k: bounds[k]),
        "goal_rate_10x_naive": round(10.0 * naive["rate"], 1),
        "wall_budget_us_per_tweet": round(wall_budget, 1),
        "serve_wall_us_per_tweet": round(1e6 / serve["rate"], 1),
        "cpu_budget_us_per_tweet": round(cpu_budget, 1),
        "serve_cpu_us_per_tweet": round(serve_cpu, 1),
        "forward_cpu_us_per_tweet": forward_cpu,
        "other_cpu_us_per_tweet": round(rest_cpu, 1),
        # The forward CPU per tweet that would put serve's total CPU per tweet at the budget.
        "forward_cpu_us_needed": round(cpu_budget - rest_cpu, 1),
        "forward_speedup_needed_cpu": (
            round(forward_cpu / (cpu_budget - rest_cpu), 2) if cpu_budget > rest_cpu else None
        ),
    }


def _yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _backend_rows(result: dict[str, Any]) -> list[str]:
    rows = [
        "| backend | ceiling tweets/s | serve tweets/s | serve / ceiling | serve / naive | "
        "ceiling per CPU-s | serve per CPU-s | serve / ceiling (CPU) | serve / naive (CPU) | "
        "latency at /s | p50 ms | p99 ms |",
        "| --- |" + " ---: |" * 11,
    ]
    for key, b in result["backends"].items():
        if "skipped" in b:
            rows.append(f"| {key} | skipped: {b['skipped']} |" + " |" * 10)
            continue
        lat, c, s = b["latency"], b["ceiling"], b["serve"]
        mark = " (best gated)" if key == result["backend"] else ""
        rows.append(
            f"| {b['name']}{mark} | {c['rate']:.1f} | {s['rate']:.1f} | "
            f"{b['serve_vs_ceiling']:.2f} | {b['serve_vs_naive']:.1f}× | {c['cpu_rate']:.1f} | "
            f"{s['cpu_rate']:.1f} | {b['serve_vs_ceiling_cpu']:.2f} | "
            f"{b['serve_vs_naive_cpu']:.1f}× | {lat['target_rate']} | {lat['p50_ms']:.0f} | "
            f"{lat['p99_ms']:.0f} |"
        )
    nv = result["naive"]
    rows.append(
        f"| naive (torch fp32, per message) | | {nv['rate']:.1f} | | 1.0× | | "
        f"{nv['cpu_rate']:.1f} | | 1.0× | | | |"
    )
    return rows


def _stage_rows(result: dict[str, Any]) -> list[str]:
    names = [k for k, b in result["backends"].items() if "serve" in b]
    serves = {k: result["backends"][k]["serve"] for k in names}
    rows = [
        "| µs per tweet (wall / CPU) | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for stage in ("decode", "clean", "tokenize", "prep_stage", "forward", "infer_stage", "publish"):
        cells = []
        for k in names:
            wall = serves[k]["stage_us_per_tweet"].get(stage, 0.0)
            cpu = serves[k]["stage_cpu_us_per_tweet"].get(stage)
            cells.append(f"{wall:.0f}" + ("" if cpu is None else f" / {cpu:.0f}"))
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    rows.append(
        "| serve total (wall per tweet / process CPU per tweet) | "
        + " | ".join(
            f"{1e6 / serves[k]['rate']:.0f} / {1e6 / serves[k]['cpu_rate']:.0f}" for k in names
        )
        + " |"
    )
    return rows


def _engine_rows(result: dict[str, Any]) -> list[str]:
    rows = [
        "| broker | backend | serve tweets/s | seconds | broker CPU s | broker CPU µs/tweet |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for engine, e in result["engines"].items():
        if "skipped" in e:
            rows.append(f"| {engine} | skipped: {e['skipped']} | | | | |")
            continue
        rows.append(
            f"| {engine} | {e['backend']} | {e['rate']:.1f} | {e['seconds']} | "
            f"{e['broker_cpu_s']} | {e['broker_cpu_us_per_tweet']} |"
        )
    return rows


def markdown(r: dict[str, Any]) -> str:
    t, q, w, m, c = r["targets"], r["quantization"], r["where_time_goes"], r["machine"], r["config"]
    prep = r["prep"]
    lines = [
        "# Stream throughput",
        "",
        f"{r['date']} · {m['cpu']} · {m['cores']} cores · torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']} · {c['threads']} inference thread · model `{r['model']}` · "
        f"batch_size {c['batch_size']}, batch_max_messages {c['batch_max_messages']}, linger "
        f"{c['linger_ms']} ms · {c['messages']} tweets per run ({c['csv']})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Best gated backend: **{r['backend']}** ({r['backend_reason']}).",
        "",
        "## Per backend (embedded broker)",
        "",
        *_backend_rows(r),
        "",
        f"naive (torch fp32, one prediction + one produce/flush per message): "
        f"{r['naive']['rate']:.1f} tweets/s over {r['naive']['inputs']} messages. Latency: "
        "replay at half of that backend's serve rate, input produced → output acknowledged, "
        "after a warm-up that is excluded.",
        "",
        "## Targets (best gated backend)",
        "",
        "| target | value | goal | |",
        "| --- | ---: | ---: | --- |",
        f"| serve / naive | {t['serve_vs_naive']:.1f}× | ≥ 10× | {_yes(t['serve_vs_naive_met'])} |",
        f"| serve / ceiling | {t['serve_vs_ceiling']:.2f} | ≥ 0.85 | "
        f"{_yes(t['serve_vs_ceiling_met'])} |",
        f"| p99 at half load | {t['p99_ms']:.0f} ms | ≤ 500 ms | {_yes(t['p99_met'])} |",
        f"| quantization macro-F1 delta | {q['macro_f1_delta']:+.4f} (agreement "
        f"{q['agreement']:.3f}) | ≥ −0.01 | {_yes(q['macro_f1_delta'] >= -0.01)} |",
        "",
        "## Where the time goes (serve, busy µs per tweet per stage)",
        "",
        *_stage_rows(r),
        "",
        "Stages: `decode` and `publish` (build records + produce) run on the Kafka thread; "
        "`clean` and `tokenize` are parts of `prep_stage` (stream-prep thread, which also "
        "plans); `forward` is the part of `infer_stage` (stream-infer thread) spent in the "
        "backend. A thread's busy share of serve's wall time (best backend): "
        + ", ".join(f"{k} {v:.0%}" for k, v in w["thread_busy_share"].items())
        + f". Bottleneck: {w['bottleneck_thread']}.",
        "",
        f"10× naive = {w['goal_rate_10x_naive']} tweets/s, i.e. "
        f"{w['wall_budget_us_per_tweet']:.0f} µs of wall time per tweet (serve: "
        f"{w['serve_wall_us_per_tweet']:.0f}); in CPU time, "
        f"{w['cpu_budget_us_per_tweet']:.0f} µs per tweet (serve: "
        f"{w['serve_cpu_us_per_tweet']:.0f}, "
        f"of which forward {w['forward_cpu_us_per_tweet']:.0f} and everything else "
        f"{w['other_cpu_us_per_tweet']:.0f}). In CPU terms, 10× needs the forward pass at "
        f"{w['forward_cpu_us_needed']:.0f} µs per tweet, {w['forward_speedup_needed_cpu']}× "
        "faster than now.",
        "",
        "## Broker engines (best backend, same run)",
        "",
        *_engine_rows(r),
        "",
        "## Preparation alone (cleaning + English filter, cold cache)",
        "",
        "| workers | tweets per CPU-second (per core) | wall tweets/s | CPU µs/tweet |",
        "| ---: | ---: | ---: | ---: |",
        *(
            f"| {p['workers']} | {p['tweets_per_cpu_s']} | {p['wall_tweets_per_s']} | "
            f"{p['cpu_us_per_tweet']} |"
            for p in prep["runs"]
        ),
        "",
        f"Load average start/end: {m['load_average_start'][0]} / {m['load_average_end'][0]} on "
        f"{m['cores']} cores (shared machine: quote the ratios of this run, not absolute rates).",
        "",
    ]
    return "\n".join(lines)


def write_results(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "stream_throughput.md").write_text(markdown(result))

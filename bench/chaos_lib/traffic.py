"""Long steady traffic (soak) and hostile traffic (every malformed class among good tweets)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from chaos_lib.harness import Ctx, Harness, rounded
from chaos_lib.observe import looped_ids, tally, write_csv

_START_TIMEOUT_S = 120.0


def soak(
    ctx: Ctx, *, duration_s: float = 600.0, rate: float = 100.0, sample_s: float = 10.0
) -> dict[str, Any]:
    """Steady traffic for `duration_s`; RSS of serve and alerts every `sample_s`. Growth is
    measured from the end of the warm-up (a fifth of the run, at least one sample) to the end."""
    with Harness(ctx, "soak") as h:
        base = write_csv(h.dir / "input.csv", 5_000, ctx.seed)
        limit = int(duration_s * rate)
        ids = looped_ids(base, limit)
        serve = h.serve("serve", group_id="soak", instance_id="soak-w1")
        alerts = h.alerts()
        serve.wait_event("rebalance", _START_TIMEOUT_S)
        replay = h.replay(h.dir / "input.csv", rate=rate, limit=limit)
        t0 = time.time()
        samples: list[dict[str, Any]] = []
        while replay.alive and time.time() - t0 < duration_s * 2 + 60:
            samples.append(
                {
                    "t_s": round(time.time() - t0, 1),
                    "serve_mb": rounded(serve.rss_mb(), 1),
                    "alerts_mb": rounded(alerts.rss_mb(), 1),
                    "outputs": h.collector.distinct_ids(),
                }
            )
            time.sleep(sample_s)
        complete = h.collector.wait_complete(set(ids), timeout=180)
        samples.append(
            {
                "t_s": round(time.time() - t0, 1),
                "serve_mb": rounded(serve.rss_mb(), 1),
                "alerts_mb": rounded(alerts.rss_mb(), 1),
                "outputs": h.collector.distinct_ids(),
            }
        )
        warm = max(1, len(samples) // 5)
        result: dict[str, Any] = tally(ids, h.collector.snapshot())

        def growth(key: str) -> float | None:
            vals = [s[key] for s in samples[warm:] if s[key] is not None]
            return rounded(vals[-1] - vals[0], 1) if len(vals) >= 2 else None

        result.update(
            {
                "duration_s": duration_s,
                "rate_per_s": rate,
                "warmup_samples": warm,
                "serve_rss_growth_mb": growth("serve_mb"),
                "alerts_rss_growth_mb": growth("alerts_mb"),
                "serve_rss_max_mb": max((s["serve_mb"] or 0 for s in samples), default=None),
                "alerts_rss_max_mb": max((s["alerts_mb"] or 0 for s in samples), default=None),
                "serve_alive": serve.alive,
                "alerts_alive": alerts.alive,
                "complete": complete,
                "samples": samples,
            }
        )
        return result


def _tweet(i: str, text: Any = "btc to the moon, buying more today", **extra: Any) -> bytes:
    return json.dumps({"id": i, "text": text, **extra}).encode()


# class name -> (value builder from the input id, the expected outcome). "output" accepts a
# classified or skipped record; "skipped" only a skip; "dead_letter:<kind>" that dead letter.
MALFORMED: dict[str, tuple[Any, str]] = {
    "good": (_tweet, "output"),
    "invalid_json": (
        lambda i: b'{"id": "' + i.encode() + b'", "text": ',
        "dead_letter:invalid_json",
    ),
    "non_utf8": (
        lambda i: b'{"id": "x", "text": "\xff\xfe bad bytes"}',
        "dead_letter:invalid_utf8",
    ),
    "json_array": (lambda i: json.dumps([i, "btc moon"]).encode(), "dead_letter:not_an_object"),
    "json_scalar": (lambda i: b"42", "dead_letter:not_an_object"),
    "missing_text": (lambda i: json.dumps({"id": i}).encode(), "dead_letter:missing_field"),
    "null_text": (lambda i: _tweet(i, None), "dead_letter:missing_field"),
    "missing_id": (
        lambda i: json.dumps({"text": "btc moon"}).encode(),
        "dead_letter:missing_field",
    ),
    "wrong_type_text": (lambda i: _tweet(i, 12345), "dead_letter:wrong_type"),
    "object_text": (lambda i: _tweet(i, {"t": "x"}), "dead_letter:wrong_type"),
    "empty_text": (lambda i: _tweet(i, ""), "skipped"),
    "whitespace_text": (lambda i: _tweet(i, " \t\n "), "skipped"),
    "nul_escaped": (lambda i: _tweet(i, "btc\u0000moon\u0000 pump it up now"), "output"),
    "nul_raw": (
        lambda i: b'{"id": "' + i.encode() + b'", "text": "a\x00b"}',
        "dead_letter:invalid_json",
    ),
    "one_mb_value": (lambda i: _tweet(i, "moon " * 200_000), "dead_letter:oversized"),
    "overlong_id": (lambda i: _tweet("x" * 300 + i), "dead_letter:wrong_type"),
    "tombstone": (lambda i: None, "dead_letter:invalid_json"),
    "unknown_fields": (lambda i: _tweet(i, extra={"deep": [1, {"a": None}]}), "output"),
    "deep_nesting": (lambda i: b"[" * 30_000 + b"]" * 30_000, "dead_letter:invalid_json"),
    "bad_created_at": (lambda i: _tweet(i, created_at="not a time"), "dead_letter:wrong_type"),
    "lone_surrogate": (
        lambda i: b'{"id": "' + i.encode() + b'", "text": "\\ud800 moon"}',
        "dead_letter:invalid_utf8",
    ),
}


def _matches(kind: str, expected: str) -> bool:
    if expected == "output":
        return kind == "classified" or kind.startswith("skipped:")
    if expected == "output_or_dead_letter":
        return True
    if expected == "skipped":
        return kind.startswith("skipped:")
    return kind == expected


# Classes that once crashed serve (none today; lone_surrogate did): sent last, after everything
# else was answered, so one poison message cannot hide the verdicts on all the others.
POISON: tuple[str, ...] = ()


def _produce(bootstrap: str, topic: str, plan: list[tuple[str, str]]) -> list[str]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4 * 1024 * 1024})
    errors: list[str] = []
    for cls, key in plan:
        producer.produce(
            topic,
            key=key.encode(),
            value=MALFORMED[cls][0](key),
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
    producer.flush(60)
    return errors


def malformed_mix(
    ctx: Ctx,
    *,
    rounds: int = 20,
    good_per_round: int = 10,
    poison: bool = True,
    session_timeout_ms: int | None = None,
) -> dict[str, Any]:
    with Harness(ctx, "malformed_mix") as h:
        plan: list[tuple[str, str]] = []
        for r in range(rounds):
            plan += [(c, f"m-{c}-{r}") for c in MALFORMED if c != "good" and c not in POISON]
            plan += [("good", f"m-good-{r}-{g}") for g in range(good_per_round)]
        h.rng.shuffle(plan)
        last = [(c, f"m-{c}-{r}") for r in range(rounds) for c in POISON if poison]
        last += [("good", f"m-good-after-{r}") for r in range(rounds)]
        h.rng.shuffle(last)
        env = {}
        if session_timeout_ms is not None:
            env["CRYPTOSENT_STREAM__SESSION_TIMEOUT_MS"] = str(session_timeout_ms)
        serve = h.serve("serve", env=env, group_id="malformed", instance_id="malformed-w1")
        serve.wait_event("rebalance", _START_TIMEOUT_S)
        errors = _produce(h.broker.bootstrap, h.topics["input"], plan)
        complete = h.collector.wait_complete({k for _, k in plan}, timeout=120)
        alive_before_poison = serve.alive
        errors += _produce(h.broker.bootstrap, h.topics["input"], last)
        complete &= h.collector.wait_complete({k for _, k in last}, timeout=60)
        plan += last
        ids = [key for _, key in plan]
        records = h.collector.snapshot()
        by_id: dict[str, list[str]] = {}
        for rec in records:
            by_id.setdefault(rec.input_id, []).append(rec.kind)
        per_class: dict[str, dict[str, Any]] = {}
        for cls, key in plan:
            expected = MALFORMED[cls][1]
            got = by_id.get(key, [])
            row = per_class.setdefault(
                cls, {"expected": expected, "inputs": 0, "right": 0, "got": Counter()}
            )
            row["inputs"] += 1
            row["got"].update(got or ["(nothing)"])
            row["right"] += int(len(got) == 1 and _matches(got[0], expected))
        wrong = {c: r for c, r in per_class.items() if r["right"] != r["inputs"]}
        result: dict[str, Any] = tally(ids, records)
        result.update(
            {
                "classes": len(MALFORMED),
                "produce_errors": errors[:5],
                "wrong_outcomes": sum(r["inputs"] - r["right"] for r in per_class.values()),
                "wrong_classes": sorted(wrong),
                "per_class": {
                    c: {**r, "got": dict(r["got"])} for c, r in sorted(per_class.items())
                },
                "serve_alive_before_poison": alive_before_poison,
                "serve_alive": serve.alive,
                "serve_exit_code": serve.proc.returncode,
                "serve_last_lines": serve.plain_lines[-2:],
                "complete": complete,
            }
        )
        return result

"""Measure one `cryptosent serve` worker's footprint (and alerts' and the dashboard's RSS) for the
Kubernetes resource requests.

Runs the real CLI processes (embedded broker, serve, replay at a fixed rate) and samples serve's
RSS and CPU time from /proc while /metrics counts what it consumed. Writes
deploy/sizing/serve_footprint.{json,md}. Not a test: a one-off measurement whose figures the
manifests and docs/deploy.md cite.

    python deploy/sizing/measure_serve.py --model models/quick --seconds 60 --rate 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
CSV = ROOT / "stream" / "demo_data" / "crypto_tweets_demo_stream.csv"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE / 2**20


def cpu_s(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICKS


def consumed(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^cryptosent_stream_consumed_total (\S+)$", text, flags=re.MULTILINE)
    return float(m.group(1)) if m else None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"error: timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSENT_")}
    env["PYTHONPATH"] = str(ROOT)
    env["CRYPTOSENT_LOG_FORMAT"] = "json"
    cli = [sys.executable, "-m", "cryptosent"]
    procs: list[subprocess.Popen[str]] = []
    try:
        broker = subprocess.Popen(
            [*cli, "broker", "--create-topics"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        procs.append(broker)
        assert broker.stdout is not None
        env["CRYPTOSENT_KAFKA__BOOTSTRAP_SERVERS"] = broker.stdout.readline().strip()
        port = free_port()
        serve = subprocess.Popen(
            [
                *cli,
                "serve",
                "--model",
                str(args.model),
                "--torch-threads",
                str(args.torch_threads),
                "--metrics-port",
                str(port),
                "--device",
                "cpu",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        procs.append(serve)
        wait_for(lambda: consumed(port) is not None, 120, "serve's /metrics")
        # alerts and the dashboard read serve's output: measured alongside, for their requests.
        others: dict[str, subprocess.Popen[str]] = {}
        for name, extra in (
            ("alerts", {"CRYPTOSENT_ALERTS__METRICS_PORT": str(free_port())}),
            ("dashboard", {"CRYPTOSENT_DASHBOARD__PORT": str(free_port())}),
        ):
            others[name] = subprocess.Popen(
                [*cli, name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**env, **extra},
                text=True,
            )
            procs.append(others[name])
        replay = subprocess.Popen(
            [
                *cli,
                "replay",
                "--csv",
                str(CSV),
                "--topic",
                "cryptosent.tweets",
                "--rate",
                str(args.rate),
                "--loop",
                "--no-progress",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        procs.append(replay)
        wait_for(lambda: (consumed(port) or 0) > 0, 120, "the first consumed input")
        start = time.monotonic()
        samples: list[dict[str, float]] = []
        warm: dict[str, float] | None = None
        while (elapsed := time.monotonic() - start) < args.seconds:
            sample = {
                "t_s": round(elapsed, 1),
                "rss_mib": round(rss_mib(serve.pid), 1),
                "cpu_s": cpu_s(serve.pid),
                "consumed": consumed(port) or 0.0,
                **{f"{n}_rss_mib": round(rss_mib(p.pid), 1) for n, p in others.items()},
            }
            samples.append(sample)
            if warm is None and elapsed >= args.warmup:
                warm = sample
            time.sleep(2.0)
        last = samples[-1]
        if warm is None or last is warm:
            raise SystemExit("error: --seconds must exceed --warmup by a sample or more")
        span = last["t_s"] - warm["t_s"]
        tweets = last["consumed"] - warm["consumed"]
        cores = (last["cpu_s"] - warm["cpu_s"]) / span
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python deploy/sizing/measure_serve.py", *sys.argv[1:]]),
            "host": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
            "model": json.loads((args.model / "cryptosent.json").read_text())["model_version"],
            "torch_threads": args.torch_threads,
            "replay_rate": args.rate,
            "steady_window_s": round(span, 1),
            "tweets_per_s": round(tweets / span, 1),
            "cores_used": round(cores, 3),
            "core_ms_per_tweet": round(1000 * cores * span / tweets, 2) if tweets else None,
            "rss_mib_peak": max(s["rss_mib"] for s in samples),
            "rss_mib_after_warmup": warm["rss_mib"],
            "rss_mib_last": last["rss_mib"],
            "alerts_rss_mib_peak": max(s["alerts_rss_mib"] for s in samples),
            "dashboard_rss_mib_peak": max(s["dashboard_rss_mib"] for s in samples),
            "samples": samples,
        }
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    (OUT / "serve_footprint.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# serve footprint (for the Kubernetes requests)",
        "",
        f"{result['date']} · {result['host']['cpus']} CPUs, load {result['host']['loadavg']} · "
        f"model `{result['model']}` (quick profile, MiniLM) · torch threads {args.torch_threads}",
        "",
        f"Command: `{result['command']}`",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| replay rate (offered) | {args.rate:g} tweets/s |",
        f"| consumed (steady window of {span:.0f} s) | {result['tweets_per_s']} tweets/s |",
        f"| CPU used | {result['cores_used']} cores |",
        f"| CPU per tweet | {result['core_ms_per_tweet']} core-ms |",
        f"| RSS after warm-up | {result['rss_mib_after_warmup']} MiB |",
        f"| RSS peak | {result['rss_mib_peak']} MiB |",
        f"| RSS at the end | {result['rss_mib_last']} MiB |",
        f"| alerts RSS peak (same run) | {result['alerts_rss_mib_peak']} MiB |",
        f"| dashboard RSS peak (same run) | {result['dashboard_rss_mib_peak']} MiB |",
        "",
    ]
    (OUT / "serve_footprint.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

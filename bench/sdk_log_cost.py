"""What one ``run.log`` of 10 scalars costs the training loop: runstream against its peers.

    python -m bench.sdk_log_cost [--calls 100000]

Each tracker runs in its own process, on this machine, in this one run: runstream online
against a real local Kafka broker, wandb in offline mode, and MLflow with a sqlite store and
``synchronous=False``. Every call is timed with ``perf_counter_ns``; the table gives the
percentiles, the loop's calls per second, the time the final flush took, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from bench.common import local_stack, machine, table

LOOP = """
import json, os, sys, time
N = int(sys.argv[1])
WARMUP = min(1000, N // 10)
data = {f"metric_{i}": 0.1 * i for i in range(10)}
pc = time.perf_counter_ns
def measure(log):
    for i in range(WARMUP):
        log(i)
    lat = []
    append = lat.append
    start = time.perf_counter()
    for i in range(WARMUP, WARMUP + N):
        t = pc()
        log(i)
        append(pc() - t)
    return lat, time.perf_counter() - start
"""

RUNSTREAM = (
    LOOP
    + """
import runstream
from runstream.settings import Settings
run = runstream.init(project="bench", settings=Settings.load(system_metrics_interval=0))
def log(i):
    data["metric_0"] = i * 1e-3
    run.log(data, step=i)
lat, seconds = measure(log)
t = time.perf_counter(); result = run.finish(); end = time.perf_counter() - t
print(json.dumps({"lat": lat, "seconds": seconds, "end": end, "ok": result.ok}))
"""
)

WANDB = (
    LOOP
    + """
import wandb
run = wandb.init(project="bench", mode="offline", settings=wandb.Settings(console="off"))
def log(i):
    data["metric_0"] = i * 1e-3
    run.log(data, step=i)
lat, seconds = measure(log)
t = time.perf_counter(); run.finish(); end = time.perf_counter() - t
print(json.dumps({"lat": lat, "seconds": seconds, "end": end, "ok": True}))
"""
)

MLFLOW = (
    LOOP
    + """
import mlflow
mlflow.set_tracking_uri("sqlite:///" + os.path.join(os.environ["BENCH_DIR"], "mlflow.db"))
mlflow.start_run()
def log(i):
    data["metric_0"] = i * 1e-3
    mlflow.log_metrics(data, step=i, synchronous=False)
lat, seconds = measure(log)
t = time.perf_counter(); mlflow.end_run(); end = time.perf_counter() - t
print(json.dumps({"lat": lat, "seconds": seconds, "end": end, "ok": True}))
"""
)


def run_peer(name: str, code: str, calls: int, env: dict[str, str]) -> dict[str, float] | str:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        full_env = {**os.environ, **env, "BENCH_DIR": workdir, "WANDB_DIR": workdir,
                    "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                    "RUNSTREAM_DIR": workdir}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(calls)],
            env=full_env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
        return f"failed: {last}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lat = sorted(result["lat"])
    n = len(lat)
    return {
        "calls": n,
        "p50": lat[n // 2] / 1000,
        "p90": lat[int(n * 0.9)] / 1000,
        "p99": lat[int(n * 0.99)] / 1000,
        "p999": lat[int(n * 0.999)] / 1000,
        "max": lat[-1] / 1000,
        "rate": n / result["seconds"],
        "end": result["end"],
        "ok": result["ok"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=100_000, help="runstream calls")
    parser.add_argument("--wandb-calls", type=int, default=20_000)
    parser.add_argument("--mlflow-calls", type=int, default=5_000)
    args = parser.parse_args()

    with local_stack() as stack:
        env = {
            "RUNSTREAM_KAFKA_BOOTSTRAP": stack.settings.kafka_bootstrap,
            "RUNSTREAM_FINISH_TIMEOUT": "60",
        }
        results = {
            "runstream (online, real Kafka)": run_peer("runstream", RUNSTREAM, args.calls, env),
            "wandb 0.31 (offline)": run_peer("wandb", WANDB, args.wandb_calls, {}),
            "MLflow 3 (sqlite, synchronous=False)": run_peer(
                "mlflow", MLFLOW, args.mlflow_calls, {}
            ),
        }
    print(f"run.log of 10 scalars, {machine()}")
    rows = [
        [
            "tracker",
            "calls",
            "p50 us",
            "p90 us",
            "p99 us",
            "p99.9 us",
            "max us",
            "calls/s",
            "finish s",
        ]
    ]
    for name, r in results.items():
        if isinstance(r, str):
            rows.append([name, r, "", "", "", "", "", "", ""])
            continue
        rows.append([name, f"{r['calls']:,}", f"{r['p50']:.2f}", f"{r['p90']:.2f}",
                     f"{r['p99']:.2f}", f"{r['p999']:.1f}", f"{r['max']:.0f}",
                     f"{r['rate']:,.0f}", f"{r['end']:.2f}"])  # fmt: skip
    print(table(rows))
    ours = results["runstream (online, real Kafka)"]
    if isinstance(ours, dict):
        p50, p99 = ours["p50"], ours["p99"]
        print(f"\nrunstream targets: p50 <= 3 us ({p50:.2f}), p99 <= 30 us ({p99:.2f})")
        for name, r in results.items():
            if isinstance(r, dict) and r is not ours:
                ratio50, ratio99 = r["p50"] / p50, r["p99"] / p99
                print(f"{name}: p50 {ratio50:.0f}x, p99 {ratio99:.0f}x runstream's")


if __name__ == "__main__":
    main()

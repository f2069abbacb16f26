"""Batch scoring on Ray Data: sequences/s with 1 and 2 model actors on this machine.

    python bench/ray_scoring.py                       # headline model, 8192 sequences of T=64, 3 repeats
    python bench/ray_scoring.py --sequences 2048 --repeats 1    # a short check (~1 min)

The headline model (Embedding(20000, 128) -> 2 x LSTM(256) -> Dense(1, sigmoid),
seed 0) scores random full-length sequences read from a Parquet file, through
examples/ray_batch_scoring.py's pipeline (read -> blocks of one batch ->
``map_batches(Scorer)`` on an actor pool -> materialised in the object store).
Configurations run interleaved, ``--repeats`` times each; the median wall time
gives sequences/s. Each actor has one CPU and runs one engine thread; the local
Ray instance gets one CPU more for the read tasks. Beside them, the same batches
through ``model.predict`` in this process with 1 and 2 threads (no Ray) show what
the engine alone does, so the table separates the engine from Ray's overhead.
The driver consumes the results as they stream out (``iter_batches``): the
time to the first scored batch is the fixed cost (actor start, model load,
reading), the rate from the first to the last batch the steady throughput.
Every Ray score is checked against ``model.predict``. Writes
``<out>.json``/``.md`` (default: the benchmark results folder, see
``rnninfer bench --help``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import rnninfer
from rnninfer.bench import machine, runner
from rnninfer.bench.cases import HEADLINE_MODEL
from rnninfer.serving.ray import Scorer


def _pipeline(ray: Any, src: str, ref: Any, actors: int, batch: int) -> Any:
    ds = ray.data.read_parquet(src).repartition(target_num_rows_per_block=batch)
    return ds.map_batches(Scorer, fn_constructor_kwargs={"model": ref}, batch_size=batch, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)


def run(sequences: int, T: int, batch: int, repeats: int, actor_counts: Sequence[int]) -> dict[str, Any]:
    """Time every configuration; returns the results document."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    model = rnninfer.build(HEADLINE_MODEL.layer_list(), seed=0, threads=1, name="headline")
    x = np.random.default_rng(0).integers(0, HEADLINE_MODEL.vocab, size=(sequences, T))
    want = model.predict(x)[:, 0]
    times: dict[str, list[float]] = {}
    first: dict[int, list[float]] = {}
    steady: dict[int, list[float]] = {}
    load_before = machine.cpu_snapshot()
    with tempfile.TemporaryDirectory(prefix="rnninfer-ray-bench-") as tmp:
        src = str(Path(tmp) / "seqs.parquet")
        pq.write_table(pa.table({"id": np.arange(sequences), "tokens": list(x)}), src)
        ray.init(num_cpus=max(actor_counts) + 1, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            ref = ray.put(model)
            for r in range(repeats):
                for threads in (1, 2):
                    local = model if threads == 1 else rnninfer.load(model.to_bytes(), threads=2)
                    t0 = time.perf_counter()
                    for i in range(0, sequences, batch):
                        local.predict(x[i: i + batch])
                    times.setdefault(f"in-process, {threads} thread{'s' if threads > 1 else ''}", []).append(
                        time.perf_counter() - t0)
                for a in actor_counts:
                    got = np.full(sequences, np.nan, np.float32)
                    arrivals: list[tuple[float, int]] = []
                    t0 = time.perf_counter()
                    for part in _pipeline(ray, src, ref, a, batch).iter_batches(batch_size=None,
                                                                              batch_format="numpy"):
                        got[part["id"]] = part["score"]
                        arrivals.append((time.perf_counter() - t0, len(part["id"])))
                    dt = time.perf_counter() - t0
                    if not np.array_equal(got, want):
                        raise RuntimeError(f"{a} actor(s): scores differ from model.predict")
                    first.setdefault(a, []).append(arrivals[0][0])
                    span = arrivals[-1][0] - arrivals[0][0]
                    if span > 0:
                        steady.setdefault(a, []).append((sequences - arrivals[0][1]) / span)
                    times.setdefault(f"Ray Data, {a} actor{'s' if a > 1 else ''} x 1 CPU", []).append(dt)
                    print(f"[repeat {r + 1}/{repeats}] {a} actor(s): {sequences / dt:.0f} seq/s", file=sys.stderr)
        finally:
            ray.shutdown()
    load = machine.other_load(load_before, machine.cpu_snapshot(), machine.cpu_info().get("logical_cpus") or 1)
    rows_out = [{"config": k, "median_s": statistics.median(v), "all_s": v,
                 "seq_per_s": sequences / statistics.median(v)} for k, v in times.items()]
    for row in rows_out:
        if row["config"].startswith("Ray"):
            a = int(row["config"].split(", ")[1].split()[0])
            row["first_result_s"] = statistics.median(first[a])
            row["steady_seq_per_s"] = statistics.median(steady[a]) if steady.get(a) else None
    return {"schema": "rnninfer-bench-ray/1", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv, "sequences": sequences, "T": T, "batch": batch, "repeats": repeats,
            "model": "Embedding(20000,128) -> 2 x LSTM(256) -> Dense(1, sigmoid)", "rnninfer": rnninfer.__version__,
            "isa": model.isa, "cpu": machine.cpu_info(), "versions": machine.versions((*machine.VERSIONED_PACKAGES,
                                                                                        "ray", "pyarrow")),
            "load": load, "results": rows_out}


def markdown(res: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [f"# Batch scoring on Ray Data ({res['created']})", "",
             (f"{res['model']}, {res['sequences']} sequences of T = {res['T']}, batches of {res['batch']}, "
              f"median of {res['repeats']} runs; {res['cpu'].get('model_name')}, {res['cpu'].get('usable_cpus')} "
              f"usable cores; rnninfer {res['rnninfer']} ({res['isa']}), ray {res['versions'].get('ray')}."), "",
             ("sequences/s = sequences / median wall time of the whole job; first result = time until the "
              "first scored batch reaches the driver (actor start, model load, reading, one batch); steady = "
              "the sequences after the first batch over the time from the first to the last batch."), "",
             "| configuration | median s | sequences/s | first result s | steady sequences/s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    by = {}
    for r in res["results"]:
        fixed = f"{r['first_result_s']:.2f}" if "first_result_s" in r else "-"
        steady = f"{r['steady_seq_per_s']:.0f}" if r.get("steady_seq_per_s") else "-"
        lines.append(f"| {r['config']} | {r['median_s']:.2f} | {r['seq_per_s']:.0f} | {fixed} | {steady} |")
        by[r["config"].split(" x ")[0]] = r
    one, two = by.get("Ray Data, 1 actor"), by.get("Ray Data, 2 actors")
    if one and two:
        lines += ["", f"2 actors / 1 actor: {two['seq_per_s'] / one['seq_per_s']:.2f}x end to end"
                  + (f", {two['steady_seq_per_s'] / one['steady_seq_per_s']:.2f}x steady"
                     if one.get("steady_seq_per_s") and two.get("steady_seq_per_s") else "") + "."]
    load = res.get("load") or {}
    if load.get("other_cores", 0) > 0.2:
        lines += ["", f"Noisy run: other processes kept {load['other_cores']:.2f} cores busy on average."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=8192)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--actors", default="1,2", help="actor counts to compare (default 1,2)")
    p.add_argument("--out", default=None, help="output prefix (default: <results dir>/ray-scoring-<time>)")
    args = p.parse_args(argv)
    res = run(args.sequences, args.steps, args.batch_size, args.repeats, [int(a) for a in args.actors.split(",")])
    out = Path(args.out) if args.out else runner.results_dir() / f"ray-scoring-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(res)
    Path(str(out) + ".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    Path(str(out) + ".md").write_text(text)
    print(text)
    print(f"wrote {out}.json, {out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

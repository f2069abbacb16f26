"""The benchmark's results as a report: Markdown tables, a plain verdict, noise
flags, the plot, and the files a run writes (``<out>.json``, ``.md``, ``.png``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


#: Two medians closer than this ratio are reported as about the same speed.
SAME_SPEED = 1.03
#: p99 over this many medians flags an engine's timings as noisy.
NOISY_P99 = 2.0
#: Cores kept busy by other processes (average over the run) above which the run is flagged.
NOISY_OTHER_CORES = 0.2
#: Hypervisor steal (% of CPU time) above which the run is flagged.
NOISY_STEAL_PCT = 2.0


def compare(a: str, a_ms: float, b: str, b_ms: float) -> str:
    """``"a is 1.92x faster than b"`` (or the other way round), from two median latencies."""
    if a_ms <= 0 or b_ms <= 0:
        return "-"
    ratio = max(a_ms, b_ms) / min(a_ms, b_ms)
    if ratio < SAME_SPEED:
        return f"{a} and {b} about the same"
    fast, slow = (a, b) if a_ms < b_ms else (b, a)
    return f"{fast} {ratio:.2f}x faster than {slow}"


def counterpart(engine: str, engines: Mapping[str, Any]) -> str | None:
    """The rnninfer engine a peer is compared with: the same weight precision when rnninfer
    ran it (``onnxruntime-int8`` -> ``rnninfer-int8``), else fp32 ``rnninfer``."""
    if engine == "rnninfer":
        return None
    for suffix in ("int8", "bf16"):
        twin = f"rnninfer-{suffix}"
        if engine.endswith(f"-{suffix}") and engine != twin and "median_ms" in engines.get(twin, {}):
            return twin
    return "rnninfer" if "median_ms" in engines.get("rnninfer", {}) else None


def _case_title(c: Mapping[str, Any]) -> str:
    t = c["threads"]
    return f"{c['model']}, T={c['T']}, batch {c['batch']}, {t} thread{'s' if t > 1 else ''}"


def verdict_lines(res: Mapping[str, Any]) -> list[str]:
    """One plain sentence per case: how rnninfer's median compares with every peer framework's."""
    lines = ["## Verdict (median latency per call, same run)", ""]
    any_peer = False
    for c in res["cases"]:
        eng = c["engines"]
        ours = eng.get("rnninfer", {})
        if "median_ms" not in ours:
            continue
        parts = []
        for n, st in eng.items():
            if n.startswith("rnninfer") or "median_ms" not in st:
                continue
            twin = counterpart(n, eng)
            if twin is None:
                continue
            any_peer = True
            parts.append(f"{compare(twin, eng[twin]['median_ms'], n, st['median_ms'])} "
                         f"({eng[twin]['median_ms']:.3f} vs {st['median_ms']:.3f} ms)")
        head = f"- **{_case_title(c)}**: rnninfer {ours['median_ms']:.3f} ms"
        lines.append(head + ("; " + "; ".join(parts) if parts else "; no peer framework timed") + ".")
    if not any_peer:
        skipped = ", ".join(res.get("skipped_engines", {})) or "none"
        lines += ["", ("No peer framework was timed (skipped: " + skipped + "). Install them with "
                       "`pip install 'rnninfer[bench]'` (PyTorch, ONNX Runtime) or `'rnninfer[bench-all]'` "
                       "(adds OpenVINO, TensorFlow/Keras) and run again.")]
    return [*lines, ""]


def noise_lines(res: Mapping[str, Any]) -> list[str]:
    """Warnings that a run's timings are unreliable: long tails, other load, hypervisor steal."""
    warn = []
    load = res.get("load") or {}
    if load.get("other_cores", 0.0) > NOISY_OTHER_CORES:
        warn.append(f"other processes kept {load['other_cores']:.2f} of the machine's {load['cpus']} cores busy "
                    f"on average during the run (1-min load average {load.get('loadavg_1m_before')} before, "
                    f"{load.get('loadavg_1m_after')} after): every engine was slowed, multi-threaded cases most")
    if load.get("steal_pct", 0.0) > NOISY_STEAL_PCT:
        warn.append(f"the hypervisor gave {load['steal_pct']:.1f} % of CPU time to other guests (steal)")
    tails = [f"{c['name']} {n} ({st['p99_ms'] / st['median_ms']:.1f}x)"
             for c in res["cases"] for n, st in c["engines"].items()
             if "median_ms" in st and st["median_ms"] > 0 and st["p99_ms"] > NOISY_P99 * st["median_ms"]]
    if tails:
        shown = "; ".join(tails[:8]) + (f"; and {len(tails) - 8} more" if len(tails) > 8 else "")
        warn.append(f"p99 above {NOISY_P99:g}x the median (calls interrupted): {shown}")
    if not warn:
        other = load.get("other_cores")
        quiet = f"other processes used {other:.2f} cores on average; " if other is not None else ""
        return [f"Noise: none flagged ({quiet}every p99 within {NOISY_P99:g}x its median).", ""]
    return ["## Noise: this run's timings are unreliable", "",
            *(f"- {w}." for w in warn),
            "", "Re-run on a quiet machine (no compiles, no other benchmarks) before quoting these numbers.", ""]


_COLUMNS_NOTE = (
    "Columns: median / p99 = latency per call; seq/s = batch / median; compared with = how this engine's "
    "median compares with rnninfer's (with rnninfer-int8 / rnninfer-bf16 for a peer's int8 / bf16 variant); "
    "machine bound = the fastest this call could run on this machine by the run's own measurements: each step "
    "streams the recurrent weights at the measured read bandwidth or does its FLOPs at the measured sgemm "
    "peak, whichever takes longer, pointwise work ignored (bench/README.md, 'How the machine bound is "
    "computed'); % of bound = bound / median (100 % = at the bound; above 100 % beats NumPy's streaming "
    "rate, which the bound uses); n = timed calls; max err = largest difference from the float64 reference."
)


def markdown(res: Mapping[str, Any]) -> str:
    """The results as a Markdown report: verdict, noise, machine and engines, one row per case and engine."""
    m = res["machine"]
    cpu = m["cpu"]
    lines = [f"# rnninfer predict benchmark ({res['mode']})", ""]
    lines += verdict_lines(res)
    lines += noise_lines(res)
    lines += [
        "## Run", "",
        (f"- run: {res['created']}; rounds {res['settings']['rounds']} x ~{res['settings']['round_ms']:g} ms "
         f"per engine, interleaved; check tolerance {res['settings']['check_tolerance']:g}"),
        (f"- CPU: {cpu.get('model_name')} (family {cpu.get('cpu_family')}, model {cpu.get('model')}), "
         f"{cpu.get('usable_cpus')} usable cores, SIMD {' '.join(cpu.get('simd_flags', []))}"
         + (" (virtual machine)" if cpu.get("hypervisor") else "")),
        f"- rnninfer: {res['rnninfer']['version'] or 'not run'}",
    ]
    for n, v in res["engines"].items():
        if n != "rnninfer":
            lines.append(f"- {n}: {v}")
    for n, why in res["skipped_engines"].items():
        lines.append(f"- {n}: skipped, {why}")
    bw = m["bandwidth"]
    bw_txt = ", ".join(f"{int(k) // 1024} KiB {v['best'] / 1e9:.0f}" for k, v in
                       sorted(bw.items(), key=lambda kv: int(kv[0])))
    peak_txt = ", ".join(f"{k} thr {v['best'] / 1e9:.0f}" for k, v in m["peak"].items())
    lines += [
        f"- measured single-core read bandwidth (GB/s, numpy best-of): {bw_txt}",
        f"- measured fp32 sgemm peak (GFLOP/s): {peak_txt}",
        "",
        "## All engines", "",
        _COLUMNS_NOTE,
        "",
        "| case | engine | median ms | p99 ms | seq/s | compared with | machine bound ms | % of bound | n | max err |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for c in res["cases"]:
        eng = c["engines"]
        for n, st in eng.items():
            if "median_ms" in st:
                err = max(st.get("check_max_abs_err", 0.0), st.get("timed_check_max_abs_err", 0.0))
                twin = counterpart(n, eng) if not n.startswith("rnninfer-") else (
                    "rnninfer" if "median_ms" in eng.get("rnninfer", {}) else None)
                vs = compare(n, st["median_ms"], twin, eng[twin]["median_ms"]) if twin else "-"
                lines.append(
                    f"| {c['name']} | {n} | {st['median_ms']:.3f} | {st['p99_ms']:.3f} | "
                    f"{st['throughput_seq_s']:.0f} | {vs} | "
                    f"{c['limit']['ms']:.3f} | {st['pct_of_limit']:.0f} % | {st['n']} | {err:.1e} |"
                )
            elif st.get("status") != "skipped":
                lines.append(f"| {c['name']} | {n} | {st.get('status')}: {str(st.get('reason', ''))[:120]} "
                             "| | | | | | | |")
    lines.append("")
    lines += schedule_lines(res)
    lines += scaling_lines(res)
    return "\n".join(lines)


_PLAN_COLUMNS = (("split", "split"), ("split_late", "split, joined late"), ("split_alone", "split, ran alone"),
                 ("wavefront", "wavefront"), ("shards", "shards"), ("one_thread", "one thread"),
                 ("held_off", "held off"), ("backoffs", "back-offs"))


def schedule_lines(res: Mapping[str, Any]) -> list[str]:
    """How rnninfer's scheduler ran the timed multi-threaded calls (plan kinds,
    split back-offs), one row per case: which plan a median came from."""
    rows = [(c["name"], c["engines"]["rnninfer"]["schedule"]) for c in res["cases"]
            if c["threads"] > 1 and "schedule" in c["engines"].get("rnninfer", {})]
    if not rows:
        return []
    lines = ["## rnninfer's plans in the timed calls", "",
             ("Calls per plan kind (split: threads split every layer's hidden units, joined late: the caller ran "
              "the first units alone while a worker woke; held off: planned without split plans after threads "
              "were held up at step barriers; back-offs: how often that began). See docs/engine.md."), "",
             "| case | calls | " + " | ".join(t for _, t in _PLAN_COLUMNS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in _PLAN_COLUMNS) + " |"]
    for name, sched in rows:
        lines.append(f"| {name} | {sched.get('calls', 0)} | "
                     + " | ".join(str(sched.get(k, 0)) for k, _ in _PLAN_COLUMNS) + " |")
    return [*lines, ""]


def scaling_rows(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Same-run thread scaling: every case timed at 1 thread and at more, per engine.

    One row per (case at ``n > 1`` threads, engine) whose 1-thread twin (same
    model, ``T`` and batch) was timed too: medians and p99 at both counts, the
    speedup of the medians, and rnninfer's speedup over the engine at ``n``.
    """
    by_key = {(c["model"], c["T"], c["batch"], c["threads"]): c for c in res["cases"]}
    rows = []
    for c in res["cases"]:
        if c["threads"] == 1:
            continue
        one = by_key.get((c["model"], c["T"], c["batch"], 1))
        if one is None:
            continue
        ours = c["engines"].get("rnninfer", {}).get("median_ms")
        for n, st in c["engines"].items():
            st1 = one["engines"].get(n, {})
            if "median_ms" not in st or "median_ms" not in st1:
                continue
            rows.append({
                "model": c["model"], "T": c["T"], "batch": c["batch"], "threads": c["threads"], "engine": n,
                "median_1t_ms": st1["median_ms"], "p99_1t_ms": st1["p99_ms"],
                "median_ms": st["median_ms"], "p99_ms": st["p99_ms"],
                "speedup": st1["median_ms"] / st["median_ms"],
                "rnninfer_vs_engine": (st["median_ms"] / ours) if ours and n != "rnninfer" else None,
            })
    return rows


def _vs_rnninfer(row: Mapping[str, Any]) -> str:
    ratio = row["rnninfer_vs_engine"]
    if ratio is None:
        return "-"
    return compare("rnninfer", row["median_ms"] / ratio, row["engine"], row["median_ms"])


def scaling_lines(res: Mapping[str, Any]) -> list[str]:
    """The Markdown section for :func:`scaling_rows` (empty when no case ran at 1 and more threads)."""
    rows = scaling_rows(res)
    if not rows:
        return []
    lines = [
        "## Thread scaling (same run)", "",
        ("speedup = median at 1 thread / median at n threads (above 1: more threads help); compared with "
         "rnninfer = at n threads."), "",
        ("| model | T | batch | n | engine | 1 thread median / p99 ms | n threads median / p99 ms | speedup "
         "| compared with rnninfer |"),
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['T']} | {r['batch']} | {r['threads']} | {r['engine']} | "
            f"{r['median_1t_ms']:.3f} / {r['p99_1t_ms']:.3f} | {r['median_ms']:.3f} / {r['p99_ms']:.3f} | "
            f"{r['speedup']:.2f}x | {_vs_rnninfer(r)} |"
        )
    lines.append("")
    return lines


def plot(res: Mapping[str, Any], path: Path) -> bool:
    """Save a PNG: per case, one horizontal bar per engine (median, whisker to p99, the machine
    bound dashed); for many cases, each peer's median over rnninfer's per case."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = [c for c in res["cases"] if any("median_ms" in st for st in c["engines"].values())]
    if not cases:
        return False
    title = (f"rnninfer predict ({res['mode']}), {res['rnninfer']['version'] or 'rnninfer'}\n"
             f"{res['machine']['cpu'].get('model_name')}, {res['machine']['cpu'].get('usable_cpus')} usable cores")
    if len(cases) <= 8:
        cols = min(len(cases), 2)
        rows = (len(cases) + cols - 1) // cols
        n_eng = max(sum("median_ms" in st for st in c["engines"].values()) for c in cases)
        fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 0.8 + rows * (0.9 + 0.28 * n_eng)),
                                 squeeze=False)
        for ax, c in zip(axes.flat, cases):
            timed = [(n, st) for n, st in c["engines"].items() if "median_ms" in st]
            ys = np.arange(len(timed))[::-1]
            med = [st["median_ms"] for _, st in timed]
            p99 = [st["p99_ms"] - st["median_ms"] for _, st in timed]
            colors = ["tab:orange" if n == "rnninfer" else ("tab:red" if n.startswith("rnninfer") else "tab:blue")
                      for n, _ in timed]
            ax.barh(ys, med, xerr=[np.zeros(len(timed)), p99], color=colors, capsize=2, height=0.7)
            ax.set_yticks(ys)
            ax.set_yticklabels([n for n, _ in timed], fontsize=8)
            ax.axvline(c["limit"]["ms"], color="k", linestyle="--", linewidth=1, label="machine bound")
            ax.set_xscale("log")
            ax.set_title(f"batch {c['batch']}, T={c['T']}, {c['threads']} thread{'s' if c['threads'] > 1 else ''}",
                         fontsize=9)
            ax.set_xlabel("ms per call (bar: median, whisker: p99)", fontsize=8)
            ax.tick_params(axis="x", which="both", labelsize=8)
            ax.legend(fontsize=7, loc="lower right")
        for ax in list(axes.flat)[len(cases):]:
            ax.set_visible(False)
    else:
        fig, ax = plt.subplots(figsize=(10, 4.8))
        names = list(dict.fromkeys(n for c in cases for n, st in c["engines"].items()
                                   if "median_ms" in st and n != "rnninfer"))
        for n in names:
            ratios = [c["engines"].get(n, {}).get("rnninfer_speedup", np.nan) for c in cases]
            ax.plot(range(len(cases)), ratios, marker="o", linestyle="", label=n)
        ax.axhline(1.0, color="k", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("case (row order of the .md table)")
        ax.set_ylabel("engine median / rnninfer median\n(above 1: rnninfer faster)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_results(res: dict[str, Any], out: str | os.PathLike[str]) -> dict[str, str]:
    """Write ``<out>.json``, ``<out>.md`` and ``<out>.png``; returns their paths."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(base.with_suffix(".json")), "md": str(base.with_suffix(".md"))}
    res["outputs"] = paths
    Path(paths["md"]).write_text(markdown(res))
    png = base.with_suffix(".png")
    if plot(res, png):
        paths["png"] = str(png)
    Path(paths["json"]).write_text(json.dumps(res, indent=1, default=float) + "\n")
    return paths

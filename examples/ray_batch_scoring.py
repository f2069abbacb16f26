"""Score token sequences on a Ray cluster with Ray Data: one rnninfer model per actor.

    pip install "rnninfer[ray]"
    python examples/ray_batch_scoring.py model.npz sequences.parquet scores/ --actors 2
    python examples/ray_batch_scoring.py model.npz sequences.jsonl scores/ --format json

The input is Parquet (a file or a folder of files) or JSON lines, with a column of
token-id lists (``--column``, default ``tokens``) and any other columns (an ``id``,
say), which are copied to the output beside the ``score`` column. The model is put
in Ray's object store once (``ray.put``: its file's bytes and load options) and
each actor loads it once, with as many threads as CPUs it was given
(``--cpus-per-actor``); Ray Data streams the blocks through the actors in batches
of ``--batch-size`` sequences, one ``predict`` call each. Every score is exactly
what ``model.predict`` gives for that sequence.

Without ``--address`` the script starts a local Ray instance with ``--actors x
--cpus-per-actor`` CPUs plus one for the read and write tasks (actors that held
every CPU would leave none to read the input, and the job would wait forever)
and stops it at the end; with ``--address auto`` (or ``ray://...``) it joins an
existing cluster. ``--cpus-per-actor`` may be fractional (0.5: two actors share
a core, one engine thread each).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rnninfer
from rnninfer.serving.ray import Scorer


def read(ray: Any, src: str) -> Any:
    """A Ray dataset from Parquet or JSON lines (by suffix; a folder is read as Parquet)."""
    if src.endswith((".jsonl", ".json")):
        return ray.data.read_json(src, lines=True)
    return ray.data.read_parquet(src)


def score(ray: Any, model: rnninfer.Model, src: str, *, actors: int = 2, cpus_per_actor: float = 1.0,
          batch_size: int = 256, column: str = "tokens") -> Any:
    """The scored dataset (lazy: runs when written or consumed); the cluster needs a CPU
    beyond the actors' for the read and write tasks."""
    # A file is read as one block or a few; blocks of one batch each spread the work over
    # every actor (streaming, no shuffle), whatever the input's file layout.
    ds = read(ray, src).repartition(target_num_rows_per_block=batch_size)
    return ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"model": ray.put(model), "column": column},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        batch_size=batch_size,
        batch_format="numpy",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an rnninfer model file (.npz)")
    p.add_argument("input", help="Parquet file or folder, or a .jsonl file")
    p.add_argument("output", help="output folder")
    p.add_argument("--format", choices=["parquet", "json"], default="parquet", help="output format")
    p.add_argument("--column", default="tokens", help="the column of token-id lists")
    p.add_argument("--actors", type=int, default=2, help="model actors (default 2)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0,
                   help="CPUs per actor; its engine threads = the whole CPUs (at least 1)")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per predict call")
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    args = p.parse_args(argv)

    import ray

    model = rnninfer.load(args.model)
    started = not ray.is_initialized()
    if started:
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=math.ceil(args.actors * args.cpus_per_actor) + 1, include_dashboard=False)
    try:
        t0 = time.perf_counter()
        ds = score(ray, model, args.input, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                   batch_size=args.batch_size, column=args.column)
        Path(args.output).mkdir(parents=True, exist_ok=True)
        if args.format == "parquet":
            ds.write_parquet(args.output)
        else:
            ds.write_json(args.output)
        print(f"scored {args.input} into {args.output} in {time.perf_counter() - t0:.1f} s "
              f"({args.actors} actors x {args.cpus_per_actor} CPU)")
    finally:
        if started:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

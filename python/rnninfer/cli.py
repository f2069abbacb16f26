"""The ``rnninfer`` command line: ``convert``, ``info``, ``predict``, ``bench``.

Run ``rnninfer COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .converters.torch import READOUTS as TORCH_READOUTS
from .errors import ModelFormatError
from .format.manifest import ELEMENTWISE_ACTIVATIONS, HEAD_ACTIVATIONS
from .format.precision import PRECISIONS

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


def _source_kind(src: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(src).suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise SystemExit(
        f"rnninfer convert: cannot tell the framework of {src!r} from its suffix; "
        "pass --from keras or --from torch"
    )


def _cmd_convert(args: argparse.Namespace) -> int:
    from . import from_keras, from_torch

    kind = _source_kind(args.src, args.from_)
    if kind == "keras":
        torch_only = [o for o in ("readout", "head_activation", "hidden_activation", "nonlinearity")
                      if getattr(args, o) is not None]
        if torch_only:
            raise SystemExit(f"rnninfer convert: --{torch_only[0].replace('_', '-')} applies to --from torch only")
        model = from_keras(args.src)
    else:
        model = from_torch(
            args.src,
            readout=args.readout,
            head_activation=args.head_activation,
            hidden_activation=args.hidden_activation,
            nonlinearity=args.nonlinearity or "tanh",
        )
    if args.precision != "fp32":
        model = model.with_precision(args.precision)
    model.save(args.output, compress=args.compress)
    print(model.summary())
    print(f"precision: {model.precision}")
    print(f"wrote {args.output}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import isa, load

    model = load(args.model, precision=args.precision)
    print(model.summary())
    print(f"isa: {isa()}, threads: {model.threads}, precision: {model.precision}")
    return 0


def _parse_seq(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError as e:
        raise SystemExit(f"rnninfer predict: --tokens takes integers separated by commas or spaces: {e}") from e


def _cmd_predict(args: argparse.Namespace) -> int:
    from . import load

    model = load(args.model, threads=args.threads, precision=args.precision)
    x: Any
    lengths = None
    if args.tokens and args.input:
        raise SystemExit("rnninfer predict: give --tokens or --input, not both")
    if args.tokens:
        seqs = [_parse_seq(t) for t in args.tokens]
        x = seqs[0] if len(seqs) == 1 else seqs
    elif args.input:
        x = np.load(args.input, allow_pickle=False)
        if args.lengths:
            lengths = np.asarray(_parse_seq(args.lengths))
    else:
        raise SystemExit("rnninfer predict: give --tokens 1,2,3 (repeatable) or --input ARRAY.npy")
    out = model.predict(x, lengths=lengths)
    if args.output:
        np.save(args.output, out)
        print(f"wrote {args.output} with shape {out.shape}")
    else:
        print(json.dumps(np.round(out.astype(np.float64), 7).tolist()))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.runner import main as bench_main

    return bench_main(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import load

    try:
        from .serving import service
    except ImportError as e:
        raise SystemExit(f"rnninfer serve: {e}") from None
    config = service.ServeConfig(
        max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
        queue_timeout_s=args.queue_timeout_s, max_tokens=args.max_tokens,
        max_sequences=args.max_sequences, max_body_bytes=args.max_body_bytes,
        max_streams=args.max_streams, stream_idle_s=args.stream_idle_s,
    )
    model = load(args.model, threads=args.threads, precision=args.precision)
    service.serve(model, host=args.host, port=args.port, config=config,
                  shutdown_timeout_s=args.shutdown_timeout_s)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rnninfer`` command."""
    from . import __version__

    p = argparse.ArgumentParser(prog="rnninfer", description="Fast CPU inference for stacked RNN models.")
    p.add_argument("--version", action="version", version=f"rnninfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Keras or PyTorch checkpoint to an rnninfer .npz")
    c.add_argument("src", help=".keras/.h5 (Keras) or .pt/.pth/.safetensors (PyTorch)")
    c.add_argument("-o", "--output", required=True, help="output .npz path")
    c.add_argument("--from", dest="from_", choices=["keras", "torch"], help="source framework (default: by suffix)")
    c.add_argument("--readout", choices=TORCH_READOUTS,
                   help="torch: what the head reads (default: last); _backward_first/_sum/_mean: how "
                        "a bidirectional top layer's directions are combined (docs/torch.md)")
    c.add_argument("--head-activation", choices=("identity", *HEAD_ACTIVATIONS),
                   help="torch: what forward applies after the last Linear (a checkpoint cannot show it)")
    c.add_argument("--hidden-activation", choices=("identity", *ELEMENTWISE_ACTIVATIONS),
                   help="torch: activation between Linear head layers")
    c.add_argument("--nonlinearity", choices=["tanh", "relu"], help="torch: nn.RNN activation for state dicts")
    c.add_argument("--compress", action="store_true", help="deflate the archive")
    c.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="store w_ih/w_hh as fp32 (default), bf16 or int8 (docs/precision.md)")
    c.set_defaults(func=_cmd_convert)

    i = sub.add_parser("info", help="print a model's layer table and provenance")
    i.add_argument("model")
    i.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="weight precision to load with (default: what the file stores)")
    i.set_defaults(func=_cmd_info)

    r = sub.add_parser("predict", help="run a model on token ids or an input array")
    r.add_argument("model")
    r.add_argument("--tokens", action="append", help="one sequence of ids, e.g. 12,7,99 (repeat for a batch)")
    r.add_argument("--input", help=".npy array: (T,) / (B, T) ids or (T, F) / (B, T, F) features")
    r.add_argument("--lengths", help="true lengths of a padded --input, e.g. 5,3")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="weight precision to run with (default: what the file stores)")
    r.add_argument("-o", "--output", help="write the result to this .npy instead of printing it")
    r.set_defaults(func=_cmd_predict)

    b = sub.add_parser(
        "bench",
        help="time a model (default: the built-in headline model) against installed peer frameworks",
    )
    from .bench.runner import add_arguments

    add_arguments(b)
    b.set_defaults(func=_cmd_bench)

    s = sub.add_parser("serve", help="serve a model over HTTP with micro-batching (extra 'serve'; docs/serving.md)")
    s.add_argument("model")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--threads", type=int, default=None, help="engine threads per call (default: the cores)")
    s.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="weight precision to run with (default: what the file stores)")
    s.add_argument("--max-batch", type=int, default=64, help="most sequences per engine call (default 64)")
    s.add_argument("--max-delay-ms", type=float, default=1.0,
                   help="longest wait for more requests after a call (default 1.0)")
    s.add_argument("--max-queue", type=int, default=1024, help="most waiting requests; beyond: 503 (default 1024)")
    s.add_argument("--queue-timeout-s", type=float, default=30.0,
                   help="a request not started within this answers 503 (default 30)")
    s.add_argument("--max-tokens", type=int, default=65536, help="most steps per request; beyond: 413 (default 65536)")
    s.add_argument("--max-sequences", type=int, default=1024,
                   help="most sequences per request; beyond: 413 (default 1024)")
    s.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="largest request body; beyond: 413 (default 8 MiB)")
    s.add_argument("--max-streams", type=int, default=10000,
                   help="most live stream sessions; beyond: 503 (default 10000)")
    s.add_argument("--stream-idle-s", type=float, default=300.0,
                   help="close a stream not fed for this long (default 300)")
    s.add_argument("--shutdown-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, how long in-flight requests may take to finish (default 30)")
    s.set_defaults(func=_cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rnninfer`` console script and ``python -m rnninfer``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ModelFormatError, ValueError, TypeError, OSError) as e:
        print(f"rnninfer {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

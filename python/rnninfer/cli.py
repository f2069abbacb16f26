"""The ``rnninfer`` command line: ``convert``, ``info``, ``predict``, ``bench``, ``serve``.

Run ``rnninfer COMMAND --help`` for each command's options. Every usage error
exits with status 2 and one line on stderr, ``rnninfer COMMAND: error: ...``,
the way argparse reports its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .converters.torch import READOUTS as TORCH_READOUTS
from .errors import ModelFormatError
from .format.manifest import ELEMENTWISE_ACTIVATIONS, HEAD_ACTIVATIONS
from .format.precision import PRECISIONS

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


class UsageError(Exception):
    """A command line that cannot run as given (exit status 2, message on stderr)."""


def open_model(path: str, **kw: Any) -> Any:
    """``rnninfer.load``, with a pointer to ``rnninfer convert`` for a framework checkpoint."""
    from . import load

    suffix = Path(path).suffix.lower()
    if suffix in KERAS_SUFFIXES + TORCH_SUFFIXES:
        kind = "Keras" if suffix in KERAS_SUFFIXES else "PyTorch"
        raise UsageError(f"{path} is a {kind} file, not an rnninfer model; convert it first: "
                         f"rnninfer convert {path} -o {Path(path).with_suffix('.npz').name}")
    return load(path, **kw)


def _check_output_folder(path: str) -> None:
    """Fail before any work when the folder an output goes to does not exist."""
    folder = Path(path).parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"cannot write {path}: the folder {str(folder)!r} {what}")


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
    from . import isa

    model = open_model(args.model, precision=args.precision)
    print(model.summary())
    print(f"isa: {isa()}, threads: {model.threads}, precision: {model.precision}")
    return 0


def _parse_seq(text: str, what: str = "--tokens") -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError as e:
        raise UsageError(f"{what} takes integers separated by commas or spaces: {e}") from e


def _parse_lengths(text: str) -> np.ndarray:
    if text.lower().endswith(".npy"):
        try:
            return np.asarray(np.load(text, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise UsageError(f"--lengths: cannot read {text!r}: {e}") from e
    return np.asarray(_parse_seq(text, "--lengths"), dtype=np.int64)


def _progress_bar(total: int | None) -> Any:
    """A tqdm bar on stderr when stderr is a terminal and tqdm is installed, else ``None``."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="seq", file=sys.stderr, dynamic_ncols=True, leave=False)


def _cmd_predict(args: argparse.Namespace) -> int:
    from . import scoring

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.tokens and args.lengths:
        raise UsageError("--lengths applies to a padded --input array; --tokens sequences carry their own lengths")
    if not args.tokens and not args.input:
        raise UsageError("give --input FILE (.jsonl, .npy, .npz or - for JSON lines on stdin) "
                         "or --tokens 1,2,3 (repeatable)")
    if args.output:
        suffix = Path(args.output).suffix.lower()
        if suffix not in scoring.OUTPUT_SUFFIXES:
            raise UsageError(f"-o {args.output}: the output must be .jsonl or .npy")
    if args.input and args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"--input {args.input}: no such file")
    model = open_model(args.model, threads=args.threads, precision=args.precision)
    tokens = model.spec.input.kind == "tokens"
    lengths = _parse_lengths(args.lengths) if args.lengths else None
    total: int | None
    if args.tokens:
        seqs = [_parse_seq(t) for t in args.tokens]
        chunks: Any = iter([scoring.Chunk(seqs, None, 0, label="--tokens sequence")])
        single, total = len(seqs) == 1, len(seqs)
    else:
        try:
            chunks = scoring.open_input(args.input, lengths, args.batch_size, tokens)
        except scoring.InputError as e:
            raise UsageError(str(e)) from e
        single = scoring.single_sequence_input(args.input, tokens)
        total = scoring.count_sequences(args.input) if args.input != "-" else None
    bar = _progress_bar(total)
    t0 = time.perf_counter()
    try:
        if not args.output:
            n = scoring.score(model, chunks, scoring.JsonlWriter(sys.stdout), bar)
            return 0
        f, tmp = scoring.open_output(args.output)
        try:
            with f:
                writer: scoring.JsonlWriter | scoring.NpyWriter = (
                    scoring.NpyWriter(f, single) if args.output.lower().endswith(".npy")
                    else scoring.JsonlWriter(f))
                n = scoring.score(model, chunks, writer, bar)
                writer.close()
            os.replace(tmp, args.output)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    print(f"scored {n} sequence{'s' if n != 1 else ''} in {dt:.2f} s ({n / max(dt, 1e-9):.0f}/s); "
          f"wrote {args.output}", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.command import main as bench_main

    return bench_main(args)


def _cmd_serve(args: argparse.Namespace) -> int:
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
    model = open_model(args.model, threads=args.threads, precision=args.precision)
    service.serve(model, host=args.host, port=args.port, config=config,
                  shutdown_timeout_s=args.shutdown_timeout_s)
    return 0


def _add_convert_parser(sub: Any) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rnninfer`` command."""
    from . import __version__

    p = argparse.ArgumentParser(prog="rnninfer", description="Fast CPU inference for stacked RNN models.")
    p.add_argument("--version", action="version", version=f"rnninfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    _add_convert_parser(sub)

    i = sub.add_parser("info", help="print a model's layer table and provenance")
    i.add_argument("model")
    i.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="weight precision to load with (default: what the file stores)")
    i.set_defaults(func=_cmd_info)

    r = sub.add_parser(
        "predict", help="score sequences from a file, stdin or the command line",
        description="Run a model on token ids or features. The input streams through the model in "
                    "chunks of --batch-size sequences, so a file of any length runs in bounded memory.",
    )
    r.add_argument("model", help="an rnninfer model file (.npz; convert Keras/PyTorch files first)")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--tokens", action="append",
                     help="one sequence of ids, e.g. 12,7,99 (repeat for a batch)")
    src.add_argument("-i", "--input",
                     help=".jsonl (one JSON list per line: ids, or feature rows), .npy (a padded (N, T) "
                          "or (N, T, F) array), .npz (padded array 'x' and 'lengths'), or - for JSON "
                          "lines on stdin")
    r.add_argument("--lengths", help="true lengths of the rows of a padded .npy input: 5,3,... or a .npy file")
    r.add_argument("-o", "--output", help="write .jsonl or .npy (default: JSON lines on stdout)")
    r.add_argument("--batch-size", type=int, default=256, help="sequences per engine call (default 256)")
    r.add_argument("--threads", type=int, default=None, help="threads per call (default: the usable cores)")
    r.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="weight precision to run with (default: what the file stores)")
    r.set_defaults(func=_cmd_predict)

    from .bench import SUITES

    b = sub.add_parser(
        "bench",
        help="time a model (default: the built-in headline model) against installed peer frameworks",
        description="Time rnninfer against PyTorch, ONNX Runtime, OpenVINO and Keras (those installed: "
                    "pip install 'rnninfer[bench]' or 'rnninfer[bench-all]') on the same model, threads "
                    "and inputs, and say which is faster. Other suites: "
                    + ", ".join(f"'rnninfer bench {n} --help'" for n in SUITES) + ".",
    )
    from .bench.command import add_arguments

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


def _run_suite(name: str, module: str, argv: list[str]) -> int:
    """``rnninfer bench NAME ...``: a registered suite's own ``main(argv)``."""
    import importlib

    return _exit_code(
        f"rnninfer bench {name}: ",
        lambda: importlib.import_module(f".bench.{module}", __package__).main(argv),
    )


def _exit_code(prefix: str, run: Callable[[], Any]) -> int:
    """Run a command; usage and input errors become one ``<prefix>error: ...`` line and exit 2."""
    try:
        return int(run())
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        msg = e.code.removeprefix(prefix)
    except (UsageError, ModelFormatError, ValueError, TypeError, OSError) as e:
        msg = str(e)
    print(f"{prefix}error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rnninfer`` console script and ``python -m rnninfer``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "bench":
        from .bench import SUITES

        if argv[1] in SUITES:
            return _run_suite(argv[1], SUITES[argv[1]], argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> Any:
        output = getattr(args, "output", None)
        if output and output != "-":
            _check_output_folder(output)
        return args.func(args)

    return _exit_code(f"rnninfer {args.command}: ", run)


if __name__ == "__main__":
    raise SystemExit(main())

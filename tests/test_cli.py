"""The ``rnninfer`` command line: convert, info, predict, bench."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework

import rnninfer
from rnninfer.cli import main
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features

DATA = Path(__file__).parent / "data"


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.npz"
    rnninfer.build([Embedding(30, 4), LSTM(8, return_sequences=True), GRU(6), Dense(2, "softmax")],
                   seed=2).save(path)
    return path


def test_convert_keras_file_then_info_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = DATA / "keras" / "k3_sentiment.keras"
    out = tmp_path / "k.npz"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text
    assert "LSTM" in text
    model = rnninfer.load(out)
    assert model.producer["converter"] == "keras"
    assert main(["info", str(out)]) == 0
    assert "total params" in capsys.readouterr().out
    assert main(["predict", str(out), "--tokens", "3,5,7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(printed, model.predict([3, 5, 7]), atol=1e-6)


def test_convert_torch_state_dict_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = framework("torch")
    emb, rnn, head = torch.nn.Embedding(20, 4), torch.nn.GRU(4, 5, num_layers=2), torch.nn.Linear(5, 1)
    state = {**{f"emb.{k}": v for k, v in emb.state_dict().items()},
             **{f"rnn.{k}": v for k, v in rnn.state_dict().items()},
             **{f"fc.{k}": v for k, v in head.state_dict().items()}}
    src = tmp_path / "ckpt.pt"
    torch.save(state, src)
    out = tmp_path / "t.npz"
    assert main(["convert", str(src), "-o", str(out), "--head-activation", "sigmoid", "--precision", "bf16"]) == 0
    assert "precision: bf16" in capsys.readouterr().out
    model = rnninfer.load(out)
    assert model.precision == "bf16"
    assert model.spec.head[0].activation == "sigmoid"
    with torch.inference_mode():
        x = torch.tensor([[1, 4, 9]]).T
        h = rnn(emb(x))[1][-1]
        want = torch.sigmoid(head(h)).numpy()[0]
    np.testing.assert_allclose(rnninfer.load(out, precision="fp32").predict([1, 4, 9]), want, atol=2e-2)


def test_predict_padded_input_file(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.array([[1, 2, 3, 0], [4, 5, 0, 0]], dtype=np.int64)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    assert main(["predict", str(model_file), "--input", str(tmp_path / "x.npy"), "--lengths", "3,2",
                 "-o", str(out)]) == 0
    y = np.load(out)
    model = rnninfer.load(model_file)
    np.testing.assert_array_equal(y, model.predict([[1, 2, 3], [4, 5]]))
    assert "scored 2 sequences" in capsys.readouterr().err


def _jsonl(path: Path, seqs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(np.asarray(s).tolist()) + "\n" for s in seqs))
    return path


def _read_jsonl(text: str) -> list[np.ndarray]:
    return [np.asarray(json.loads(line), dtype=np.float32) for line in text.splitlines() if line]


@pytest.mark.parametrize("batch_size", [1, 7, 25, 26, 1000])
def test_predict_jsonl_to_npy_is_model_predict_bit_for_bit(model_file: Path, tmp_path: Path,
                                                            batch_size: int) -> None:
    """Chunk boundaries anywhere (1, an odd size, exactly N, N+1, more than N) change no bit."""
    rng = np.random.default_rng(3)
    seqs = [rng.integers(0, 30, size=int(rng.integers(1, 15))) for _ in range(25)]
    src = _jsonl(tmp_path / "in.jsonl", seqs)
    out = tmp_path / "out.npy"
    assert main(["predict", str(model_file), "-i", str(src), "-o", str(out), "--batch-size", str(batch_size)]) == 0
    want = rnninfer.load(model_file).predict(seqs)
    got = np.load(out)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_predict_npz_to_jsonl_round_trips_float32_exactly(model_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 30, size=(40, 9))
    lengths = rng.integers(1, 10, size=40)
    np.savez_compressed(tmp_path / "in.npz", x=x, lengths=lengths)  # streamed from a deflated member
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(model_file), "-i", str(tmp_path / "in.npz"), "-o", str(out),
                 "--batch-size", "16"]) == 0
    got = np.stack(_read_jsonl(out.read_text()))
    np.testing.assert_array_equal(got, rnninfer.load(model_file).predict(x, lengths=lengths))


def test_predict_feature_model_and_sequence_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.npz"
    model = rnninfer.build([Features(3), GRU(5, return_sequences=True), Dense(2)], seed=1)
    model.save(path)
    rng = np.random.default_rng(5)
    seqs = [rng.standard_normal((int(rng.integers(1, 6)), 3)) for _ in range(9)]
    src = _jsonl(tmp_path / "f.jsonl", seqs)
    assert main(["predict", str(path), "-i", str(src), "--batch-size", "4"]) == 0
    rows = _read_jsonl(capsys.readouterr().out)
    want = model.predict(seqs)  # (9, T_max, 2), zero rows past each length
    assert [r.shape for r in rows] == [(len(s), 2) for s in seqs]
    for r, w, s in zip(rows, want, seqs):
        np.testing.assert_array_equal(r, w[: len(s)])
    # A padded array input keeps its padded steps (zero rows), as predict does.
    padded = np.zeros((9, 5, 3))
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    np.save(tmp_path / "f.npy", padded)
    lens = tmp_path / "lens.npy"
    np.save(lens, np.array([len(s) for s in seqs]))
    out = tmp_path / "f-out.npy"
    assert main(["predict", str(path), "-i", str(tmp_path / "f.npy"), "--lengths", str(lens), "-o", str(out),
                 "--batch-size", "2"]) == 0
    np.testing.assert_array_equal(np.load(out), model.predict(padded, lengths=[len(s) for s in seqs]))
    # Ragged JSON lines cannot stack into one .npy: refused with the way out, and no file is left.
    bad = tmp_path / "f-bad.npy"
    assert main(["predict", str(path), "-i", str(src), "-o", str(bad), "--batch-size", "4"]) == 2
    assert "write .jsonl" in capsys.readouterr().err
    assert not bad.exists()
    assert list(tmp_path.glob("*.part-*")) == []


def test_predict_one_sequence_array_keeps_its_shape(model_file: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.array([3, 4, 5]))
    out = tmp_path / "one-out.npy"
    assert main(["predict", str(model_file), "-i", str(tmp_path / "one.npy"), "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), rnninfer.load(model_file).predict([3, 4, 5]))


def test_predict_reads_stdin(model_file: Path) -> None:
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    r = subprocess.run(
        [sys.executable, "-m", "rnninfer", "predict", str(model_file), "-i", "-", "--batch-size", "2"],
        input="".join(json.dumps(s) + "\n" for s in seqs) + "\n", capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.stack(_read_jsonl(r.stdout)), rnninfer.load(model_file).predict(seqs))
    assert r.stderr == ""  # no progress bar when stderr is not a terminal


def test_jsonl_reader_streams(model_file: Path) -> None:
    """The first chunk comes out before the input ends: an endless stream is never read whole."""
    from rnninfer.scoring import read_jsonl

    endless = itertools.repeat("[1, 2, 3]\n")
    first = next(read_jsonl(endless, 8, tokens=True))  # type: ignore[arg-type]
    assert len(first) == 8
    assert first.lines == list(range(1, 9))


@pytest.mark.parametrize(("argv", "message"), [
    (["--tokens", "1,2", "--lengths", "2"], "--lengths applies to a padded --input"),
    (["--tokens", "a,b"], "--tokens takes integers"),
    (["--tokens", "1,99"], "out of range"),
    ([], "give --input FILE"),
    (["-i", "{tmp}/missing.jsonl"], "no such file"),
    (["-i", "{tmp}/in.csv"], "must be .jsonl, .npy, .npz"),
    (["-i", "{tmp}/in.jsonl", "-o", "{tmp}/out.npz"], "the output must be .jsonl or .npy"),
    (["-i", "{tmp}/in.jsonl", "-o", "{tmp}/no_such_dir/m.npy"], "the folder '{tmp}/no_such_dir' does not exist"),
    (["-i", "{tmp}/in.jsonl", "--lengths", "1,2"], "--lengths applies to a padded .npy input"),
    (["-i", "{tmp}/bad.jsonl"], "line 3: not valid JSON"),
    (["-i", "{tmp}/range.jsonl", "--batch-size", "2"], "line 4: token id 30"),
    (["-i", "{tmp}/in.jsonl", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["-i", "{tmp}/pad.npy", "--lengths", "1,2"], "expected 3 lengths"),
    (["-i", "{tmp}/pad.npy", "--lengths", "1,2,9"], "lengths must lie in [1, 4]"),
    (["-i", "{tmp}/two.npz"], "name it 'x'"),
])
def test_predict_usage_errors(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              argv: list[str], message: str) -> None:
    (tmp_path / "in.csv").write_text("1,2\n")
    _jsonl(tmp_path / "in.jsonl", [[1, 2], [3]])
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n\n[3, \n")
    (tmp_path / "range.jsonl").write_text("[1]\n[2]\n[3]\n[4, 30]\n")
    np.save(tmp_path / "pad.npy", np.ones((3, 4), dtype=np.int64))
    np.savez(tmp_path / "two.npz", a=np.ones((2, 2), dtype=np.int64), b=np.ones((2, 2), dtype=np.int64))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["predict", str(model_file), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnninfer predict: error: "), err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".pt", ".safetensors"])
def test_predict_and_info_on_a_framework_file_suggest_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              suffix: str) -> None:
    src = tmp_path / f"model{suffix}"
    src.write_bytes(b"not read")
    for cmd in (["predict", str(src), "--tokens", "1"], ["info", str(src)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rnninfer {cmd[0]}: error: ")
        assert f"rnninfer convert {src} -o model.npz" in err


def test_argparse_errors_use_the_same_style_and_exit_2(model_file: Path, tmp_path: Path) -> None:
    for argv, want in ((["predict", str(model_file), "--tokens", "1", "-i", "x.jsonl"], "not allowed with"),
                       (["predict", str(model_file), "--batch-size", "x"], "invalid int value"),
                       (["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.npz")], "suffix"),
                       (["convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "nope" / "m.npz")],
                        f"the folder '{tmp_path / 'nope'}' does not exist")):
        r = subprocess.run([sys.executable, "-m", "rnninfer", *argv], capture_output=True, text=True, timeout=120,
                           check=False)
        assert r.returncode == 2, (argv, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"rnninfer {argv[0]}: error: "), last
        assert want in last


def test_bench_a_model_file(model_file: Path, tmp_path: Path) -> None:
    """`rnninfer bench MODEL` times the model (rnninfer only here) and writes its result files
    into the results folder, not the current one."""
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "rnninfer", "bench", str(model_file), "--engines", "rnninfer", "--threads", "1,2",
         "--rounds", "2", "--round-ms", "5", "--steps", "6", "--batches", "1,3", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False, cwd=work,
        env={**os.environ, "RNNINFER_BENCH_DIR": str(results),
             "PYTHONPATH": os.pathsep.join([str(Path(rnninfer.__file__).parents[1]),
                                            os.environ.get("PYTHONPATH", "")])},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(work.iterdir()) == []
    [out] = results.glob("model-*.json")
    res = json.loads(out.read_text())
    assert {(c["batch"], c["threads"]) for c in res["cases"]} == {(1, 1), (3, 1), (1, 2), (3, 2)}
    for c in res["cases"]:
        assert c["engines"]["rnninfer"]["median_ms"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| rnninfer |" in md
    assert "## Verdict" in md
    assert "## Thread scaling (same run)" in md
    assert res["worker_logs"] is None  # nothing failed: no logs left in /tmp


def test_version_flag() -> None:
    r = subprocess.run([sys.executable, "-m", "rnninfer", "--version"], capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.strip() == f"rnninfer {rnninfer.__version__}"

"""The ``rnninfer`` command line: convert, info, predict, bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import rnninfer
from rnninfer.cli import main
from rnninfer.layers import GRU, LSTM, Dense, Embedding

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
    assert "shape (2, 2)" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(model_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(model_file), "--tokens", "1,99"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.npz")]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="suffix"):
        main(["convert", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "o.npz")])
    with pytest.raises(SystemExit, match="--from torch only"):
        main(["convert", str(DATA / "keras" / "k3_sentiment.keras"), "-o", str(tmp_path / "o.npz"),
              "--readout", "sequence"])
    with pytest.raises(SystemExit, match="--tokens"):
        main(["predict", str(model_file), "--tokens", "a,b"])


def test_bench_a_model_file(model_file: Path, tmp_path: Path) -> None:
    """`rnninfer bench MODEL` times the model (rnninfer only here) and writes its result files."""
    out = tmp_path / "res"
    r = subprocess.run(
        [sys.executable, "-m", "rnninfer", "bench", str(model_file), "--engines", "rnninfer", "--threads", "1,2",
         "--rounds", "2", "--round-ms", "5", "--steps", "6", "--batches", "1,3", "--no-progress",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(Path(str(out) + ".json").read_text())
    assert {(c["batch"], c["threads"]) for c in res["cases"]} == {(1, 1), (3, 1), (1, 2), (3, 2)}
    for c in res["cases"]:
        assert c["engines"]["rnninfer"]["median_ms"] > 0
    md = Path(str(out) + ".md").read_text()
    assert "| rnninfer |" in md
    assert "## Thread scaling (same run)" in md


def test_version_flag() -> None:
    r = subprocess.run([sys.executable, "-m", "rnninfer", "--version"], capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.strip() == f"rnninfer {rnninfer.__version__}"

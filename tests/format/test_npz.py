"""The model file: round trips, golden old-version files, and every fault raising ModelFormatError."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnninfer
from rnninfer import ModelFormatError
from rnninfer.format import FORMAT_VERSION
from rnninfer.layers import GRU, LSTM, Dense, Embedding

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = rnninfer.build(
        [Embedding(20, 4, mask_zero=True), LSTM(5, bidirectional=True, return_sequences=True), GRU(3),
         Dense(2, "softmax")], seed=3, name="small",
    )
    path = tmp_path / "m.npz"
    model.save(path)
    return path


def rewrite(src: Path, dst: Path, edit: Callable[[dict[str, Any], dict[str, np.ndarray]], None]) -> Path:
    """Copy a model file, letting ``edit`` change its manifest and arrays."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads(arrays.pop("__manifest__").tobytes())
    edit(manifest, arrays)
    raw = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(dst, __manifest__=raw, **arrays)
    return dst


def test_round_trip_is_identical(saved: Path, tmp_path: Path) -> None:
    a = rnninfer.load(saved)
    a.save(tmp_path / "again.npz")
    b = rnninfer.load(tmp_path / "again.npz")
    assert a.spec == b.spec
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert np.array_equal(a.tensors[k], b.tensors[k])
    x = [[1, 2, 0, 3], [5, 6]]
    assert np.array_equal(a.predict(x), b.predict(x))


def test_file_is_plain_npz_with_json_manifest(saved: Path) -> None:
    with np.load(saved, allow_pickle=False) as z:
        manifest = json.loads(z["__manifest__"].tobytes().decode("utf-8"))
        for name, info in manifest["tensors"].items():
            assert z[name].dtype == np.float32
            assert list(z[name].shape) == info["shape"]
    assert manifest["format"] == "rnninfer"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["model"]["layers"][0]["cell"] == "lstm"
    assert manifest["model"]["input"]["mask_zero"] is True
    assert manifest["producer"]["rnninfer"] == rnninfer.__version__


def test_compressed_file_loads(tmp_path: Path) -> None:
    model = rnninfer.build([Embedding(10, 3), GRU(4)], seed=1)
    model.save(tmp_path / "c.npz", compress=True)
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    assert np.array_equal(rnninfer.load(tmp_path / "c.npz").predict([1, 2]), model.predict([1, 2]))


@pytest.mark.parametrize("name", ["tokens_lstm_gru", "features_residual"])
def test_golden_v1_files_load_and_predict(name: str) -> None:
    model = rnninfer.load(DATA / "format_v1" / f"{name}.npz")
    with np.load(DATA / "format_v1" / f"{name}.expected.npz") as z:
        out = model.predict(z["inputs"], lengths=z["lengths"])
        np.testing.assert_allclose(out, z["expected"], atol=1e-5, rtol=0)


def _drop(name: str) -> Callable[[dict[str, Any], dict[str, np.ndarray]], None]:
    def edit(m: dict[str, Any], a: dict[str, np.ndarray]) -> None:
        del a[name]
    return edit


FAULTS: dict[str, tuple[Callable[[dict[str, Any], dict[str, np.ndarray]], None], str]] = {
    "missing tensor": (_drop("layers.0.bwd.w_hh"), "layers.0.bwd.w_hh"),
    "missing tensor and manifest entry": (
        lambda m, a: (a.pop("head.0.bias"), m["tensors"].pop("head.0.bias")), "missing tensor 'head.0.bias'"),
    "wrong shape": (
        lambda m, a: (a.__setitem__("layers.1.fwd.w_ih", np.zeros((9, 11), np.float32)),
                      m["tensors"].__setitem__("layers.1.fwd.w_ih", {"shape": [9, 11], "dtype": "float32"})),
        "layers.1.fwd.w_ih"),
    "shape differs from manifest": (
        lambda m, a: a.__setitem__("embedding.weight", np.zeros((20, 5), np.float32)), "embedding.weight"),
    "wrong dtype": (
        lambda m, a: a.__setitem__("head.0.weight", a["head.0.weight"].astype(np.float64)), "float32"),
    "unknown layer kind": (lambda m, a: m["model"]["layers"][1].__setitem__("cell", "transformer"),
                           "transformer"),
    "unknown layer key": (lambda m, a: m["model"]["layers"][0].__setitem__("peepholes", True), "peepholes"),
    "newer version": (lambda m, a: m.__setitem__("format_version", FORMAT_VERSION + 1), "newer"),
    "version not an int": (lambda m, a: m.__setitem__("format_version", "1"), "format_version"),
    "wrong format name": (lambda m, a: m.__setitem__("format", "onnx"), "format"),
    "extra tensor": (
        lambda m, a: (a.__setitem__("layers.9.fwd.w_ih", np.zeros(3, np.float32)),
                      m["tensors"].__setitem__("layers.9.fwd.w_ih", {"shape": [3], "dtype": "float32"})),
        "layers.9.fwd.w_ih"),
    "unlisted archive entry": (lambda m, a: a.__setitem__("stray", np.zeros(3, np.float32)), "stray"),
    "nan weights": (lambda m, a: a["layers.1.fwd.w_hh"].__setitem__((0, 0), np.nan), "NaN"),
    "bad readout": (lambda m, a: m["model"].__setitem__("readout", "attention"), "readout"),
    "bad activation": (lambda m, a: m["model"]["layers"][0].__setitem__("activation", "swishy"), "swishy"),
    "bad units": (lambda m, a: m["model"]["layers"][0].__setitem__("units", -5), "units"),
    "model section missing": (lambda m, a: m.pop("model"), "model"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faulty_file_raises_model_format_error(fault: str, saved: Path, tmp_path: Path) -> None:
    edit, needle = FAULTS[fault]
    path = rewrite(saved, tmp_path / "bad.npz", edit)
    with pytest.raises(ModelFormatError, match=None) as info:
        rnninfer.load(path)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_all_problems_are_listed(saved: Path, tmp_path: Path) -> None:
    def edit(m: dict[str, Any], a: dict[str, np.ndarray]) -> None:
        del a["layers.0.fwd.w_ih"]
        del a["head.0.weight"]

    with pytest.raises(ModelFormatError) as info:
        rnninfer.load(rewrite(saved, tmp_path / "bad.npz", edit))
    assert "layers.0.fwd.w_ih" in str(info.value)
    assert "head.0.weight" in str(info.value)
    assert len(info.value.problems) >= 2


def test_truncated_file(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            rnninfer.load(bad)


def test_corrupt_bytes(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    # Flip bytes inside the first tensor's payload: the zip CRC catches it.
    with zipfile.ZipFile(saved) as zf:
        info = zf.infolist()[1]
    start = info.header_offset + 30 + len(info.filename) + 200
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt"):
        rnninfer.load(bad)


def test_not_an_archive_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFormatError, match=r"not an \.npz"):
        rnninfer.load(tmp_path / "x.npz")
    with pytest.raises(ModelFormatError, match="cannot read"):
        rnninfer.load(tmp_path / "absent.npz")


def test_pickled_object_array_is_refused(saved: Path, tmp_path: Path) -> None:
    with np.load(saved, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(ModelFormatError):
        rnninfer.load(tmp_path / "p.npz")


def test_no_manifest(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", w=np.zeros(3, np.float32))
    with pytest.raises(ModelFormatError, match="__manifest__"):
        rnninfer.load(tmp_path / "plain.npz")


def test_manifest_not_json(saved: Path, tmp_path: Path) -> None:
    with np.load(saved, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__manifest__"] = np.frombuffer(b"{not json", dtype=np.uint8)
    np.savez(tmp_path / "j.npz", **arrays)
    with pytest.raises(ModelFormatError, match="JSON"):
        rnninfer.load(tmp_path / "j.npz")


def test_random_bit_flips_never_crash(saved: Path, tmp_path: Path) -> None:
    """Any damage gives ModelFormatError or, if harmless, a loadable model; never a crash."""
    data = saved.read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(40):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), size=3):
            buf[int(pos)] ^= 1 << int(rng.integers(0, 8))
        bad = tmp_path / f"r{trial}.npz"
        bad.write_bytes(bytes(buf))
        try:
            model = rnninfer.load(bad)
        except ModelFormatError:
            continue
        assert model.predict([1, 2, 3]).shape == (2,)

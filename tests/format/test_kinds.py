"""One table of names (format/kinds.py) drives the spec, the engine and the reference."""

from __future__ import annotations

import numpy as np
import pytest

import rnninfer
from rnninfer import _core, reference
from rnninfer.format import kinds
from rnninfer.format.checked import spec_problems
from rnninfer.format.manifest import DenseSpec, InputSpec, ModelSpec, RecurrentSpec
from rnninfer.layers import GRU, LSTM, RNN, Dense, Features


def test_engine_enums_are_the_python_table_in_order() -> None:
    names = _core._testing.desc_names()
    assert names == {
        "cell": list(kinds.CELLS),
        "direction": list(kinds.DIRECTIONS),
        "merge": list(kinds.MERGE_MODES),
        "readout": list(kinds.READOUTS),
        "activation": list(kinds.ACTIVATIONS),
    }


def test_reference_covers_the_table() -> None:
    assert set(reference.ELEMENTWISE) == set(kinds.ELEMENTWISE_ACTIVATIONS)
    assert set(reference.MERGES) == set(kinds.MERGE_MODES)
    x = np.linspace(-3.0, 3.0, 7)
    for name in kinds.HEAD_ACTIVATIONS:
        assert reference.activation(name, x).shape == x.shape


def _spec(**layer: object) -> ModelSpec:
    return ModelSpec(
        input=InputSpec(kind="features", features=4),
        layers=(RecurrentSpec(**{"cell": "gru", "units": 4, **layer}),),  # type: ignore[arg-type]
        head=(DenseSpec(units=2, activation="softmax"),),
    )


@pytest.mark.parametrize("cell", kinds.CELLS)
@pytest.mark.parametrize("direction", kinds.DIRECTIONS)
def test_every_cell_and_direction_is_accepted_and_runs(cell: str, direction: str) -> None:
    spec = _spec(cell=cell, direction=direction)
    assert spec_problems(spec) == []
    layer = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell](
        4, bidirectional=direction == "bidirectional", go_backwards=direction == "backward"
    )
    model = rnninfer.build([Features(4), layer, Dense(2)], seed=0, threads=1)
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(model.predict(x), reference.run_sequence(model.spec, dict(model.tensors), x),
                               atol=1e-5)


@pytest.mark.parametrize("name", kinds.ELEMENTWISE_ACTIVATIONS)
def test_every_elementwise_activation_is_a_cell_and_head_activation(name: str) -> None:
    assert spec_problems(_spec(activation=name, recurrent_activation=name)) == []


@pytest.mark.parametrize("name", kinds.VECTOR_ACTIVATIONS)
def test_row_activations_belong_to_heads_only(name: str) -> None:
    assert any("activation" in p for p in spec_problems(_spec(activation=name)))


@pytest.mark.parametrize(("field", "value"), [("cell", "lstm2"), ("direction", "sideways"),
                                              ("merge", "max"), ("activation", "tanhh")])
def test_names_outside_the_table_are_refused_on_both_sides(field: str, value: str) -> None:
    spec = _spec(**{field: value})
    assert any(repr(value) in p for p in spec_problems(spec))
    desc = spec.to_json_dict()
    with pytest.raises(ValueError, match=f"unknown .*'{value}'"):
        _core.Engine(desc, {}, 1)

"""The one table of names a model description may use.

Every enumerated field of the manifest takes its values from here: the spec
rules (:mod:`rnninfer.format.checked`), the dataclasses' documentation, the
reference executor and the converters read these tuples, and the C++ engine
holds the same lists, in the same order, as the names of its enums
(``csrc/engine/model_desc.h``; ``tests/format/test_kinds.py`` compares the
two through ``rnninfer._core._testing.desc_names()``). A new layer kind,
activation, merge or readout starts with an entry here.
"""

from __future__ import annotations

from types import MappingProxyType

#: Recurrent cell kinds and their gate counts (gate blocks of ``w_ih`` rows,
#: in the order LSTM ``i, f, g, o``; GRU ``r, z, n``; RNN one block).
GATES = MappingProxyType({"lstm": 4, "gru": 3, "rnn": 1})
CELLS = tuple(GATES)

DIRECTIONS = ("forward", "backward", "bidirectional")
#: How a bidirectional layer combines its two directions (Keras ``merge_mode``).
MERGE_MODES = ("concat", "sum", "mul", "ave")
#: What the head reads: the final state, every step, or mask-aware pooling.
READOUTS = ("last", "sequence", "mean", "max")
INPUT_KINDS = ("tokens", "features")

#: Element-wise activations usable inside a cell and in a head layer.
#: ``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``; ``hard_sigmoid_keras2`` is
#: Keras 2's ``clip(0.2 x + 0.5, 0, 1)``; ``leaky_relu`` has slope 0.2 (Keras);
#: ``gelu`` is the exact (erf) form.
ELEMENTWISE_ACTIVATIONS = (
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "hard_sigmoid_keras2",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "swish",
    "gelu",
    "exponential",
    "relu6",
    "leaky_relu",
    "mish",
    "hard_swish",
)
#: Activations over a whole output vector, allowed in head layers only.
VECTOR_ACTIVATIONS = ("softmax", "log_softmax")
HEAD_ACTIVATIONS = ELEMENTWISE_ACTIVATIONS + VECTOR_ACTIVATIONS
#: Every activation, in the order of the C++ ``Act`` enum.
ACTIVATIONS = HEAD_ACTIVATIONS

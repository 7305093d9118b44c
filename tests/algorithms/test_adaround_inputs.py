"""AdaRound gathers a layer's input from the model cut at that input (``layer_inputs``).  Expected
values from our own ORT session on the whole model with the tensor added as an output."""

from __future__ import annotations

import numpy as np
import onnx

from edgequant.algorithms.layer_inputs import LayerInputs, upto
from edgequant.runtime import OrtRuntime
from tests.algorithms.passnets import conv3, images

RT = OrtRuntime(allow_spinning=False)


def test_cut_model_gives_the_full_models_tensor_and_keeps_only_what_it_needs() -> None:
    model, x = conv3(), images(6)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name="r1"))
    want = RT.run(probe, {"x": x})["r1"]
    cut = upto(model, "r1")
    assert cut is not None
    assert [n.name for n in cut.graph.node] == ["conv1", "relu1"]
    assert {t.name for t in cut.graph.initializer} == {"w1", "b1"}
    gather = LayerInputs(RT, model, "r1")
    try:
        got = gather({"x": x, "w3": np.zeros(1, np.float32)})  # feeds the cut does not read are dropped
    finally:
        gather.close()
    assert gather.cut and np.array_equal(got, want)


def test_a_graph_input_is_returned_as_fed() -> None:
    gather = LayerInputs(RT, conv3(), "x")
    x = images(2)
    assert gather.direct and gather({"x": x}) is not None and np.array_equal(gather({"x": x}), x)

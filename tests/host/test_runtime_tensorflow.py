"""The last link of the runtime chain, TensorFlow's own tf.lite, runs the default model (needs TensorFlow)."""

import numpy as np
import pytest

from edge.runtime import interpreter as chain

pytestmark = pytest.mark.host


def _outputs(runtime, model, image):
    interp = runtime.make_interpreter(str(model), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], image)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def test_tensorflow_runtime_loads_and_agrees_with_litert(int8_model):
    tf_runtime = chain.load_runtime("tensorflow")
    assert tf_runtime.name == "tensorflow" and tf_runtime.version.startswith("2.")
    probes = {p.name: p for p in chain.probe_runtimes()}
    assert probes["tensorflow"].error is None, probes["tensorflow"].error
    image = np.random.default_rng(0).integers(0, 256, (1, 300, 300, 3), dtype=np.uint8)
    ours = _outputs(tf_runtime, int8_model, image)
    reference = _outputs(chain.load_runtime("ai-edge-litert"), int8_model, image)
    assert len(ours) == len(reference) == 4
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, atol=1e-3)

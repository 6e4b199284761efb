"""edge-host build-test-models: deterministic, small, and its references match the committed ones."""

import json
from pathlib import Path

import pytest


COMMITTED = Path(__file__).parent.parent / "data" / "models"

pytestmark = [pytest.mark.host, pytest.mark.slow]


@pytest.mark.parametrize("layout", ["classification", "ssd_postprocess"])
def test_rebuild_reproduces_the_committed_reference(layout, tmp_path, clip):
    from edge.host import testmodels

    (spec,) = [s for s in testmodels.specs() if s.layout == layout]
    reference = testmodels.build(spec, tmp_path / layout, clip)
    committed = json.loads((COMMITTED / layout / "reference.json").read_text())
    assert reference["frames"] == committed["frames"] and reference["params"] == committed["params"]
    for kind in ("int8", "float"):
        for got, expected in zip(reference["models"][kind], committed["models"][kind]):
            assert [d["class_id"] for d in got] == [d["class_id"] for d in expected]
            assert [d["score"] for d in got] == pytest.approx([d["score"] for d in expected], abs=1e-4)
    for path in (tmp_path / layout).glob("*.tflite"):
        assert path.stat().st_size < 400_000, f"{path.name} is not small"
    manifest = json.loads((tmp_path / layout / "manifest.json").read_text())
    assert manifest["output"]["layout"] == layout and manifest["models"]["cpu"] == f"{layout}_int8.tflite"

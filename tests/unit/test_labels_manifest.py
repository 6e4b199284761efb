import json

import pytest

from edge.errors import ModelError
from edge.runtime.manifest import find_manifest, load_manifest
from edge.vision.labels import load_labels, parse_labels


def test_plain_labels_keep_their_line_index():
    assert parse_labels("person\nbicycle\n\ncar\n") == {0: "person", 1: "bicycle", 3: "car"}


def test_id_label_pairs_with_coco_gaps():
    text = "0  person\n1  bicycle\n2  car\n12  stop sign\n89  hair drier\n"
    labels = parse_labels(text)
    assert labels[12] == "stop sign" and labels[89] == "hair drier" and 11 not in labels


def test_colon_pairs():
    assert parse_labels("0: background\n1: cat\n") == {0: "background", 1: "cat"}


def test_missing_and_empty_labels(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_labels(tmp_path / "labels.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ModelError, match="is empty"):
        load_labels(tmp_path / "empty.txt")


def test_default_manifest(model_dir):
    m = load_manifest(model_dir / "manifest.json")
    assert m.layout == "ssd_postprocess"
    assert m.models["cpu"].is_file() and m.labels.is_file()
    assert m.input.colour == "RGB" and m.input.width == 300
    assert find_manifest(m.models["cpu"]) == model_dir / "manifest.json"


@pytest.mark.parametrize("change, message", [
    ({"format": "other/1"}, "format"),
    ({"models": {}}, "must name at least one model"),
    ({"models": {"gpu": "x.tflite"}}, "unknown model role 'gpu'"),
    ({"input": {"colour": "YUV"}}, "input.colour = 'YUV'"),
    ({"input": {"std": [1, 0, 1]}}, "contains 0"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_bad_manifests(tmp_path, model_dir, change, message):
    data = json.loads((model_dir / "manifest.json").read_text())
    data.update(change)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        load_manifest(path)


def test_host_tools_keep_label_ids_with_gaps(tmp_path):
    """COCO's 90-id numbering (Coral's coco_labels.txt): ids survive a host tool's read → write."""
    from edge.host.manifests import read_labels, write_labels
    from edge.vision.labels import load_labels

    src = tmp_path / "coco_labels.txt"
    src.write_text("0  person\n1  bicycle\n2  car\n12  stop sign\n89  toothbrush\n")
    labels = read_labels(src)
    assert len(labels) == 90 and labels[12] == "stop sign" and labels[11] == ""
    out = tmp_path / "out"
    out.mkdir()
    name = write_labels(out, labels)
    assert load_labels(out / name) == load_labels(src)

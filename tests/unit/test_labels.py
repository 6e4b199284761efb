"""Label files in the forms found next to real models."""

from edge.vision.labels import label_name, parse_labels
from tests.conformance.conftest import coral_dir

# The first lines of COCO's 90-id numbering (1-based, with gaps at 12, 26, 29, 30, ...).
COCO90 = {1: "person", 2: "bicycle", 11: "fire hydrant", 13: "stop sign", 27: "backpack", 90: "toothbrush"}


def test_coral_coco_pairs_keep_the_90_id_gaps():
    # Coral's coco_labels.txt: 0-based ids in the 90-id numbering, gaps where COCO has none.
    text = "".join(f"{i - 1}  {name}\n" for i, name in COCO90.items())
    labels = parse_labels(text)
    assert labels[0] == "person" and labels[12] == "stop sign" and labels[89] == "toothbrush"
    assert 11 not in labels and label_name(labels, 11) == "11"


def test_tflite_labelmap_with_background_and_gap_placeholders():
    # labelmap.txt of the TF Lite examples: "???" for background, then 90 lines with "???" gaps.
    lines = ["???"] + [COCO90.get(i, "???") for i in range(1, 91)]
    labels = parse_labels("\n".join(lines) + "\n")
    assert labels[0] == "person" and labels[12] == "stop sign" and labels[26] == "backpack"
    assert 11 not in labels and 25 not in labels and labels[89] == "toothbrush"


def test_plain_80_class_list():
    labels = parse_labels("person\nbicycle\ncar\n")
    assert labels == {0: "person", 1: "bicycle", 2: "car"}


def test_labels_with_spaces_and_tabs():
    assert parse_labels("0\ttraffic light\n1 stop sign\n") == {0: "traffic light", 1: "stop sign"}
    assert parse_labels("traffic light\nfire hydrant\n") == {0: "traffic light", 1: "fire hydrant"}


def test_pycoral_colon_pairs_without_spaces():
    assert parse_labels("0:person\n1:bicycle\n3:motorcycle\n") == {0: "person", 1: "bicycle", 3: "motorcycle"}


def test_coral_shared_label_files():
    coral = coral_dir()
    coco = parse_labels((coral / "coco_labels.txt").read_text())
    assert coco[0] == "person" and coco[89] == "toothbrush" and 11 not in coco
    imagenet = parse_labels((coral / "imagenet_labels.txt").read_text())
    assert len(imagenet) == 1001 and imagenet[0] == "background" and imagenet[286] == "Egyptian cat"

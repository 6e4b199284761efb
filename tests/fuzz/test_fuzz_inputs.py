"""Fuzz the files a user or a manifest names: models (``edge info``, in-process: the flatbuffer
reader is pure Python), manifests, configs and labels (``edge info`` and ``edge run --max-frames 3``
in-process: the model given to the interpreter is the real one). Fixed seeds, fixed counts."""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fuzz import harness
from tests.fuzz.conftest import INT8, SEED, count

TIMEOUT = 60.0        # generous: CI machines are shared; a real hang never ends
RUN = ["run", "--max-frames", "3", "--live", "off", "--as-fast-as-possible", "--device", "cpu", "--threads", "1"]

# Values a hostile or broken file puts where another was expected. RAW: values are written into the
# JSON text as they are (json.dumps cannot write them).
JSON_VALUES = [None, True, False, 0, -1, 1, 3, 2 ** 31, 2 ** 64, -(2 ** 63), 0.5, 1e-300, -0.0, 1e308,
               "RAW:NaN", "RAW:Infinity", "RAW:1e999", "RAW:-1e999", "", "x", "A" * 5000, "../../etc/passwd",
               "/etc/passwd", "/dev/zero", "labels.txt", INT8, "ssd_anchors", "yolov8", "classification",
               "letterbox", "BGR", [], [0], [0, 0, 0], [1e-300] * 3, [[0, 0, 0, 0]], ["a", "b"], {}, {"a": 1},
               {"layout": "ssd_anchors"}, "RAW:" + "[" * 3000 + "]" * 3000]


def _dump(data) -> str:
    text = json.dumps(data)
    while '"RAW:' in text:
        start = text.index('"RAW:')
        end = text.index('"', start + 5)
        text = text[:start] + text[start + 5:end] + text[end + 1:]
    return text


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list) and len(node) <= 8:
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def mutate_json(base: dict, rng: random.Random) -> str:
    """A structural mutation of ``base`` (values replaced, keys dropped or added) or a byte-level one."""
    if rng.random() < 0.2:
        text = json.dumps(base).encode()
        return harness.apply_ops(text, harness.mutation_ops(len(text), rng)).decode("utf-8", "replace")
    data = json.loads(json.dumps(base))
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(data) if p]
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = rng.random()
        if action < 0.7:
            parent[path[-1]] = rng.choice(JSON_VALUES)
        elif action < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(("extra", "Labels", "std", "layout", "anchors"))] = rng.choice(JSON_VALUES)
    return _dump(data)


def _check(suite: str, case: str, result: harness.Result, failures: list, jsonl: Path | None = None) -> None:
    if jsonl is not None:
        torn = harness.check_jsonl(jsonl)
        if torn:
            result = harness.Result("torn", torn)
        jsonl.unlink(missing_ok=True)
    harness.record(suite, case, result)
    if not result.accepted:
        failures.append(f"{case}: {result.kind}: {result.detail[:400]}")


def _save(kind: str, name: str, data: bytes) -> None:
    import os

    if os.environ.get("EDGE_FUZZ_SAVE"):
        folder = harness.CORPUS / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _assert_none(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} cases not accepted:\n" + "\n".join(failures[:15])


@pytest.mark.parametrize("which", ["person", "coral_edgetpu", "coral_cpu"])
def test_fuzz_models_info(which, person_dir, request, tmp_path, workers):
    """Byte flips, truncations, zeroed ranges, absurd 32-bit words and splices of real models, through
    ``edge info`` in a worker process (it measures XNNPACK: the interpreter sees the bytes)."""
    if which == "person":
        base, n = (person_dir / INT8).read_bytes(), count(80)
    else:
        coral = request.getfixturevalue("coral_dir")
        name = "mobilenet_v1_0.25_128_quant" + ("_edgetpu" if which == "coral_edgetpu" else "")
        base, n = (coral / f"{name}.tflite").read_bytes(), count(60)
    rng = random.Random(f"{SEED}-models-info-{which}")
    suffix = "_edgetpu.tflite" if which == "coral_edgetpu" else ".tflite"
    cases = [harness.mutation_ops(len(base), rng) for _ in range(n)]
    for i, ops in enumerate(cases):
        (tmp_path / f"mutant{i}{suffix}").write_bytes(harness.apply_ops(base, ops))

    def one(i: int) -> harness.Result:
        return workers[i % 2].run(["info", "-m", str(tmp_path / f"mutant{i}{suffix}")], TIMEOUT)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, range(n)))
    failures: list[str] = []
    for i, (ops, result) in enumerate(zip(cases, results)):
        _check(f"model-info:{which}", f"#{i} {json.dumps(ops)[:200]}", result, failures)
        if not result.accepted:
            _save("models", f"{which}-{i}.json", json.dumps({"base": which, "ops": ops}).encode())
    assert harness.listing(tmp_path) == {f"mutant{i}{suffix}" for i in range(n)}
    _assert_none(failures)


def _model_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("model", ["person", "ssd_anchors"])
def test_fuzz_manifests(model, person_dir, data_dir, tmp_path):
    """Typed, structural and byte-level mutations of a real manifest; ``edge info`` on every one,
    ``edge run --max-frames 3`` on every other one."""
    src = person_dir if model == "person" else data_dir / "models" / "ssd_anchors"
    work = _model_copy(src, tmp_path / "model")
    base = json.loads((work / "manifest.json").read_text())
    before = harness.listing(tmp_path)
    rng = random.Random(f"{SEED}-manifests-{model}")
    failures: list[str] = []
    jsonl = tmp_path / "out" / "events.jsonl"
    jsonl.parent.mkdir()
    for i in range(count(120 if model == "person" else 80)):
        text = mutate_json(base, rng)
        (work / "manifest.json").write_text(text)
        args = ["info", "-m", str(work)] if i % 2 else [*RUN, "-m", str(work), "--jsonl", str(jsonl)]
        result = harness.run_inprocess(args, TIMEOUT)
        _check(f"manifest:{model}", f"#{i} {args[0]} {text[:300]}", result, failures, jsonl)
        if not result.accepted:
            _save("manifests", f"{model}-{i}.json", text.encode())
    assert harness.listing(tmp_path) == before | {"out"}, "a case wrote outside its place"
    _assert_none(failures)


TOML_VALUES = ["nan", "inf", "-inf", "1e999", "0", "-1", "1", "0.5", "99999999999999999999999", "true", '""',
               '"x"', '"/dev/zero"', '"../../etc/passwd"', '"auto"', '"cpu"', '"edgetpu:usb:7"', '"BGR"',
               '"letterbox"', "[]", "[1, 2]", '["person"]', '[nan, 0, 0]', "1e-300", '"1,2,3"', "{a = 1}",
               "[" * 2000 + "]" * 2000, '"\\u0000"', "2024-01-01T00:00:00Z"]
# Sections fuzzed; the network servers' (web, prometheus, mqtt) are left out: they would bind ports.
TOML_KEYS = {
    "model": ["path", "manifest", "labels", "device", "threads", "runtime", "allow_float", "layout", "input_mean",
              "input_std", "colour", "resize"],
    "source": ["realtime", "loop", "width", "height", "fps"],
    "detect": ["score_threshold", "iou_threshold", "max_detections", "classes"],
    "output": ["max_frames", "jsonl_max_bytes", "jsonl_backups", "jsonl_stats"],
    "service": ["status_interval", "reconnect", "reconnect_initial", "reconnect_max", "tpu_retry", "load_timeout"],
    "telemetry": ["interval"],
    "power": ["source", "scale", "offset", "static_watts"],
}


def _defaults() -> dict[str, str]:
    """Every key's default as TOML, so that most cases are valid but for one value and get deep."""
    from edge.config import describe

    out = {}
    for key, default, _ in describe():
        if isinstance(default, bool):
            out[key] = "true" if default else "false"
        elif isinstance(default, (int, float)):
            out[key] = repr(default)
        elif isinstance(default, str):
            out[key] = json.dumps(default)
        elif isinstance(default, (list, tuple)):
            out[key] = json.dumps(list(default))
    out["model.threads"] = "1"
    return out


def mutate_toml(rng: random.Random) -> bytes:
    defaults = _defaults()
    lines = []
    for section in rng.sample(sorted(TOML_KEYS), rng.randint(1, 3)):
        lines.append(f"[{section}]")
        keys = rng.sample(TOML_KEYS[section], rng.randint(1, min(3, len(TOML_KEYS[section]))))
        hostile = rng.choice(keys)
        for key in keys:
            value = rng.choice(TOML_VALUES) if key == hostile and rng.random() < 0.7 else \
                defaults.get(f"{section}.{key}", rng.choice(TOML_VALUES))
            lines.append(f"{key} = {value}")
    text = ("\n".join(lines) + "\n").encode()
    if rng.random() < 0.25:
        text = harness.apply_ops(text, harness.mutation_ops(len(text), rng))
    return text


def test_fuzz_configs(person_dir, tmp_path):
    rng = random.Random(f"{SEED}-configs")
    failures: list[str] = []
    config = tmp_path / "edge.toml"
    jsonl = tmp_path / "out" / "events.jsonl"
    jsonl.parent.mkdir()
    for i in range(count(150)):
        data = mutate_toml(rng)
        config.write_bytes(data)
        args = [*RUN, "-c", str(config), "-m", str(person_dir), "--jsonl", str(jsonl)]
        result = harness.run_inprocess(args, TIMEOUT)
        _check("config", f"#{i} {data[:300]!r}", result, failures, jsonl)
        if not result.accepted:
            _save("configs", f"config-{i}.toml", data)
    assert harness.listing(tmp_path) == {"edge.toml", "out"}, "a case wrote outside its place"
    _assert_none(failures)


def mutate_labels(base: bytes, rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return harness.apply_ops(base, harness.mutation_ops(len(base), rng))
    if choice < 0.5:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
    lines = [rng.choice(["person", "", "???", "n/a", "0 person", "1: car", f"{rng.randrange(10 ** 12)} big",
                         "99999999999999999999999 huge", "-1 neg", "x" * 10000, "\0", "\t", "0,zero"])
             for _ in range(rng.randint(0, 40))]
    return "\n".join(lines).encode()


def test_fuzz_labels(person_dir, tmp_path):
    rng = random.Random(f"{SEED}-labels")
    base = (person_dir / "labels.txt").read_bytes()
    failures: list[str] = []
    labels = tmp_path / "labels.txt"
    jsonl = tmp_path / "out" / "events.jsonl"
    jsonl.parent.mkdir()
    for i in range(count(100)):
        data = mutate_labels(base, rng)
        labels.write_bytes(data)
        extra = ["--classes", rng.choice(["person", "nosuch", "big,person"])] if i % 3 == 0 else []
        args = [*RUN, "-m", str(person_dir), "--labels", str(labels), "--jsonl", str(jsonl), *extra]
        result = harness.run_inprocess(args, TIMEOUT)
        _check("labels", f"#{i} {data[:200]!r}", result, failures, jsonl)
        if not result.accepted:
            _save("labels", f"labels-{i}.txt", data)
        elif extra and result.kind == "error":
            # the message names the file, never its lines
            assert all(line.decode(errors="replace") not in result.detail for line in data.splitlines()
                       if len(line) > 12), result.detail
    _assert_none(failures)

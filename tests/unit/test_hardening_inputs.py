"""Issue 14: every input error is one line and exit 2; files a manifest names stay in its directory.

Each case here failed before (a traceback and exit 1, a hang on /dev/zero, NaN silently giving no
detections, a file outside the model directory read and echoed) and is one ``edge: error:`` line with
exit status 2 now. The CLI runs in-process (``edge.cli.main``); the cases are cheap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge import bounded
from edge.cli import main
from edge.errors import ConfigError, ModelError
from edge.runtime import manifest as manifest_mod
from edge.runtime.manifest import load_manifest
from edge.runtime.model import read_model
from edge.vision.decode.mediapipe_anchors import AnchorOptions
from edge.vision.labels import load_labels


def _edge(capsys, *args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``edge ARGS`` run in-process."""
    code = main(list(args))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def _one_error_line(code: int, err: list[str], *needles: str) -> str:
    errors = [line for line in err if line.startswith("edge: error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def work(tmp_path, model_dir) -> Path:
    """A copy of the embedded model directory, free to edit."""
    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    return out


def _manifest(work: Path, **changes) -> Path:
    data = json.loads((work / "manifest.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and not key == "models":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    # "RAW:x" writes x as it is (1e999 parses as inf, which json.dumps cannot write)
    text = json.dumps(data)
    for raw in {part.split('"')[0] for part in text.split('"RAW:')[1:]}:
        text = text.replace(f'"RAW:{raw}"', raw)
    (work / "manifest.json").write_text(text)
    return work


RUN = ("run", "--jsonl", "", "--live", "off", "--max-frames", "3")

@pytest.fixture(autouse=True)
def _restore_logging():
    """edge.cli.main() in-process sets the "edge.runtime" logger's level (quiet without -v): restore
    it, so that tests after these still see that logger's INFO records in caplog."""
    import logging

    logger = logging.getLogger("edge.runtime")
    level = logger.level
    yield
    logger.setLevel(level)



# --- finite numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, key", [
    ("--score-threshold", "nan", "detect.score_threshold"),
    ("--iou-threshold", "nan", "detect.iou_threshold"),
    ("--fps", "nan", "source.fps"),
    ("--score-threshold", "inf", "detect.score_threshold"),
    ("--input-mean", "nan", "model.input_mean"),
])
def test_nan_flags_are_one_line_errors(capsys, flag, value, key):
    code, err = _edge(capsys, *RUN, flag, value)
    _one_error_line(code, err, key)


@pytest.mark.parametrize("text, message", [
    ("[detect]\nscore_threshold = nan\n", "detect.score_threshold = nan is not a finite number"),
    ("[detect]\niou_threshold = inf\n", "detect.iou_threshold = inf is not a finite number"),
    ("[source]\nfps = nan\n", "source.fps = nan is not a finite number"),
    ("[model]\ninput_mean = [nan, 0, 0]\n", "model.input_mean"),
    ("[model]\nthreads = 99999999999999999999\n", "model.threads"),
    ('[model]\npath = "a\\u0000b"\n', "contains a NUL character"),
])
def test_config_numbers_are_finite(tmp_path, text, message):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        __import__("edge.config").config.load(path)


# --- bounded reads ------------------------------------------------------------------------------

def test_dev_zero_everywhere_is_one_line(capsys, int8_model):
    for args in (("-m", "/dev/zero"), ("-m", str(int8_model), "--labels", "/dev/zero"),
                 ("-m", str(int8_model), "--manifest", "/dev/zero"), ("-c", "/dev/zero")):
        code, err = _edge(capsys, *RUN, *args)
        _one_error_line(code, err, "'/dev/zero' is not a regular file")


def test_a_fifo_does_not_hang(tmp_path, capsys):
    import os

    fifo = tmp_path / "edge.toml"
    os.mkfifo(fifo)
    code, err = _edge(capsys, *RUN, "-c", str(fifo))
    _one_error_line(code, err, "is not a regular file")


def test_size_limits(tmp_path, monkeypatch, work):
    big = tmp_path / "labels.txt"
    big.write_text("person\n" * (bounded.LABELS_MAX // 7 + 1))
    with pytest.raises(ModelError, match="more than the 1 MiB allowed"):
        load_labels(big)
    big_config = tmp_path / "big.toml"
    big_config.write_text("# padding\n" * (bounded.CONFIG_MAX // 10 + 1))
    with pytest.raises(ConfigError, match="more than the 1 MiB allowed"):
        __import__("edge.config").config.load(big_config)
    monkeypatch.setattr(bounded, "MANIFEST_MAX", 100)
    with pytest.raises(ModelError, match="more than the 9.5367e-05 MiB allowed|more than the"):
        load_manifest(work / "manifest.json")
    monkeypatch.setattr(bounded, "MODEL_MAX", 1000)
    with pytest.raises(ModelError, match="model file .* bytes, more than"):
        read_model(work / "ssdlite_mobilenet_v2_person_int8.tflite")


def test_non_utf8_and_deep_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[model]\n")
    code, err = _edge(capsys, *RUN, "-c", str(bad))
    _one_error_line(code, err, "is not UTF-8 text")
    deep = tmp_path / "deep.toml"
    deep.write_text("[model]\nthreads = " + "[" * 5000 + "]" * 5000 + "\n")
    code, err = _edge(capsys, *RUN, "-c", str(deep))
    _one_error_line(code, err, "nests arrays or tables too deeply")


def test_deeply_nested_manifest(work):
    (work / "manifest.json").write_text('{"format": "edge-manifest/1", "provenance": ' + "[" * 100000 + "]" * 100000
                                        + "}")
    with pytest.raises(ModelError, match="nests too deeply|not a valid manifest"):
        load_manifest(work / "manifest.json")


def test_nan_literal_in_a_manifest(work):
    text = (work / "manifest.json").read_text().replace('"mean": [', '"mean": [NaN, ', 1)
    text = text.replace("127.5, 127.5, 127.5]", "127.5, 127.5]", 1)
    (work / "manifest.json").write_text(text)
    with pytest.raises(ModelError, match="NaN is not a number JSON allows"):
        load_manifest(work / "manifest.json")


# --- typed manifest fields -------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"provenance": "abc"}, "provenance = 'abc' is not an object"),
    ({"name": 5}, "name = 5 is not a non-empty string"),
    ({"task": "segmentation"}, "task = 'segmentation' is not one of"),
    ({"labels": 7}, "labels = 7 is not a non-empty string"),
    ({"models": {"cpu": ["x.tflite"]}}, "models.cpu = ['x.tflite'] is not a non-empty string"),
    ({"input": {"width": "300"}}, "input.width = '300' is not an integer"),
    ({"input": {"height": -1}}, "input.height = -1 is not an integer from 0"),
    ({"input": {"pad_value": 1.5}}, "input.pad_value = 1.5 is not an integer"),
    ({"input": {"mean": "127"}}, "input.mean = '127' is not a number"),
    ({"input": {"std": 1e-300}}, "contains 0 (or a value below 1e-06"),
    ({"input": {"std": [1, 2]}}, "input.std = [1, 2] is not a number or a list of 3"),
    ({"input": {"mean": "RAW:1e999"}}, "input.mean = inf is not a finite number"),
    ({"output": {"layout": 3}}, "output.layout = 3 is not a string"),
    ({"allow_files_outside": "yes"}, "allow_files_outside = 'yes' is not true or false"),
])
def test_typed_manifest_fields(work, changes, message):
    _manifest(work, **changes)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_manifest(work / "manifest.json")


@pytest.mark.parametrize("output, message", [
    ({"max_detections": "10"}, "output.max_detections = '10' in the manifest is not a int"),
    ({"max_detections": True}, "output.max_detections = True in the manifest is not a int"),
    ({"max_detections": 10 ** 9}, "output.max_detections = 1000000000 in the manifest is not from 0"),
])
def test_output_params_are_typed(work, capsys, output, message):
    _manifest(work, output=output)
    code, err = _edge(capsys, *RUN, "-m", str(work))
    _one_error_line(code, err, message)


def _ssd_anchor_options(**changes) -> dict:
    base = {"num_layers": 4, "min_scale": 0.1484375, "max_scale": 0.75, "input_size_width": 128,
            "input_size_height": 128, "strides": [8, 16, 16, 16], "aspect_ratios": [1.0],
            "fixed_anchor_size": True, "interpolated_scale_aspect_ratio": 1.0}
    return {**base, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"strides": [0, 16, 16, 16]}, r"strides = \[0, 16, 16, 16\] is not a list of at most 64 integers from 1"),
    ({"strides": [8, 16, "x", 16]}, "strides"),
    ({"num_layers": 2 ** 40, "strides": [8]}, "num_layers = 1099511627776 is not an integer from 1 to 64"),
    ({"aspect_ratios": [0.0]}, r"aspect_ratios = \[0.0\] is not a list"),
    ({"input_size_width": 0}, "input_size_width = 0 is not an integer from 1"),
    ({"min_scale": float("nan")}, "min_scale = nan is not a number"),
    ({"fixed_anchor_size": "yes"}, "fixed_anchor_size = 'yes' is not true or false"),
    ({"feature_map_width": [10 ** 4] * 4, "feature_map_height": [10 ** 4] * 4},
     "give 800000000 anchors, more than the 1000000"),
])
def test_malformed_anchor_options_name_the_value(changes, message):
    with pytest.raises(ModelError, match=message):
        AnchorOptions.from_dict(_ssd_anchor_options(**changes))


@pytest.fixture
def anchors_work(tmp_path, data_dir) -> Path:
    """A copy of the ssd_anchors test model (anchor_options in its manifest)."""
    out = tmp_path / "ssd_anchors"
    shutil.copytree(data_dir / "models" / "ssd_anchors", out)
    return out


def _anchor_manifest(work: Path, options: dict) -> Path:
    data = json.loads((work / "manifest.json").read_text())
    data["output"]["anchor_options"] = options
    (work / "manifest.json").write_text(json.dumps(data))
    return work


def test_absurd_feature_maps_do_not_allocate(anchors_work, capsys):
    """The 116 TiB case: huge feature maps are refused from the count, before numpy allocates."""
    work = _anchor_manifest(anchors_work, _ssd_anchor_options(
        feature_map_width=[16384] * 4, feature_map_height=[16384] * 4, aspect_ratios=[1.0] * 64))
    code, err = _edge(capsys, *RUN, "-m", str(work))
    _one_error_line(code, err, "anchors, more than the 1000000")


def test_anchor_strides_zero_in_a_run_is_one_line(anchors_work, capsys):
    work = _anchor_manifest(anchors_work, _ssd_anchor_options(strides=[0, 16, 16, 16]))
    code, err = _edge(capsys, *RUN, "-m", str(work))
    _one_error_line(code, err, "output.anchor_options.strides = [0, 16, 16, 16]")


# --- confinement -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("labels", "../../../../../../etc/passwd"),
    ("labels", "/etc/passwd"),
    ("models", {"cpu": "/etc/passwd"}),
    ("models", {"cpu": "../model/../../x.tflite"}),
])
def test_manifest_files_stay_in_its_directory(work, capsys, key, value):
    _manifest(work, **{key: value})
    code, err = _edge(capsys, *RUN, "-m", str(work))
    line = _one_error_line(code, err, "resolves outside the manifest's directory")
    assert "root:" not in line


def test_symlink_escaping_the_directory_is_refused(work, tmp_path):
    (tmp_path / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (work / "labels.txt").unlink()
    (work / "labels.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ModelError, match="labels = 'labels.txt' resolves outside"):
        load_manifest(work / "manifest.json")


def test_symlink_inside_the_directory_is_fine(work):
    (work / "labels_v2.txt").write_text((work / "labels.txt").read_text())
    (work / "labels.txt").unlink()
    (work / "labels.txt").symlink_to("labels_v2.txt")
    assert load_manifest(work / "manifest.json").labels == work / "labels.txt"


def test_allow_files_outside_only_in_a_trusted_location(work, tmp_path, monkeypatch):
    _manifest(work, labels="../shared/labels.txt", allow_files_outside=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "labels.txt").write_text("person\n")
    with pytest.raises(ModelError, match="allow_files_outside is honoured only for a manifest under /etc/edge-detect"):
        load_manifest(work / "manifest.json")
    monkeypatch.setattr(manifest_mod, "TRUSTED_DIRS", (str(tmp_path),))
    manifest = load_manifest(work / "manifest.json")
    assert load_labels(manifest.labels) == {0: "person"}


def test_labels_error_never_echoes_the_file(tmp_path, capsys, int8_model):
    """--labels pointing at the wrong file: the message names the file, never its lines."""
    secret = tmp_path / "passwd"
    secret.write_text("".join(f"user{i}:x:{i}:{i}:secret-{i}:/home/u{i}:/bin/sh\n" for i in range(40)))
    code, err = _edge(capsys, *RUN, "-m", str(int8_model), "--labels", str(secret), "--classes", "nosuch")
    line = _one_error_line(code, err, "class 'nosuch' is not in the labels")
    assert "secret-" not in "\n".join(err) and "user1" not in line
    binary = tmp_path / "labels.bin"
    binary.write_bytes(b"person\0\x01\x02secret\n")
    with pytest.raises(ModelError) as info:
        load_labels(binary)
    assert "secret" not in str(info.value).replace(str(binary), "")


def test_long_values_are_cut_in_messages(work):
    _manifest(work, provenance="A" * 10_000)
    with pytest.raises(ModelError) as info:
        load_manifest(work / "manifest.json")
    assert len(str(info.value)) < 400


# --- the top-level guard -------------------------------------------------------------------------

def test_unexpected_exception_is_one_line_pointing_to_v(monkeypatch, capsys):
    import edge.app

    def boom(config):
        raise RuntimeError("invoke failed:\nnode 3 of 65 failed to prepare")
    monkeypatch.setattr(edge.app, "assemble", boom)
    code, err = _edge(capsys, *RUN)
    line = _one_error_line(code, err, "unexpected RuntimeError: invoke failed: node 3 of 65",
                           "run with -v for the traceback")
    assert "\n" not in line
    code = main([*RUN, "-v"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "the traceback is above" in err


def test_keyboard_interrupt_is_130_and_system_exit_passes(monkeypatch, capsys):
    import edge.app

    def interrupt(config):
        raise KeyboardInterrupt
    monkeypatch.setattr(edge.app, "assemble", interrupt)
    assert main(list(RUN)) == 130

    def leave(config):
        raise SystemExit(7)
    monkeypatch.setattr(edge.app, "assemble", leave)
    with pytest.raises(SystemExit) as info:
        main(list(RUN))
    assert info.value.code == 7


def test_edge_host_guard(monkeypatch, capsys):
    from edge.host import bundle
    from edge.host.cli import main as host_main

    def boom(*args, **kwargs):
        raise ValueError("bad\nthing")
    monkeypatch.setattr(bundle, "build_bundle", boom)
    code = host_main(["bundle", "/nonexistent", "-o", "/tmp/x.tar.gz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("edge-host: error: ") and len(err) == 1, err


def test_absurd_label_ids_are_refused(tmp_path):
    """The class count follows the largest id: 10^23 would size the decoder's arrays."""
    path = tmp_path / "labels.txt"
    path.write_text("0 person\n99999999999999999999999 huge\n")
    with pytest.raises(ModelError, match="id 99999999999999999999999 is above 100000"):
        load_labels(path)


def test_a_corrupt_tensor_shape_is_refused_before_the_interpreter(tmp_path):
    """Found by the fuzz suite: one 32-bit word of Coral's MobileNet set to 525598 made a tensor of
    17 GB, which AllocateTensors spent 20 s on (edge info measures XNNPACK with an interpreter)."""
    from tests.fuzz import harness
    from tests.fuzz.conftest import CORAL_DEFAULT

    src = CORAL_DEFAULT / "mobilenet_v1_0.25_128_quant.tflite"
    if not src.is_file():
        pytest.skip(f"Coral's test-data models are not in {CORAL_DEFAULT}")
    mutant = tmp_path / "model.tflite"
    mutant.write_bytes(harness.apply_ops(src.read_bytes(), [["word", 108800, 525598], ["word", 496080, 525598]]))
    with pytest.raises(ModelError, match=r"has shape \[525598, 32, 32, 32\] \(16 GiB\), more than the 1 GiB"):
        read_model(mutant)

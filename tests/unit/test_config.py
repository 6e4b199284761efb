import pytest

from edge import config
from edge.errors import ConfigError


def test_defaults_run_the_embedded_sample():
    cfg = config.load()
    assert cfg.source.uri == "sample"
    assert cfg.model.path == ""
    assert cfg.model.device == "auto"


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[model]\ndevice = "cpu"\nthreads = 2\n[detect]\nscore_threshold = 0.6\n'
                    'classes = ["person"]\n')
    cfg = config.load(path, {"detect": {"score_threshold": 0.7}})
    assert cfg.model.device == "cpu" and cfg.model.threads == 2
    assert cfg.detect.score_threshold == 0.7
    assert cfg.detect.classes == ["person"]


@pytest.mark.parametrize("text, message", [
    ("[model]\nthreds = 2\n", "unknown key model.threds"),
    ("[modle]\n", "unknown section [modle]"),
    ('[model]\nthreads = "two"\n', "model.threads = 'two' is not an integer"),
    ('[model]\nruntime = "tflite"\n', "model.runtime = 'tflite' is not one of"),
    ("[detect]\nscore_threshold = 1.5\n", "above the maximum 1.0"),
    ("[output]\nmax_frames = -1\n", "below the minimum 0"),
    ("[model\n", "is not valid TOML"),
])
def test_bad_values_name_the_value_and_the_expectation(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        config.load(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "nope.toml")


def test_comma_separated_classes_from_flags():
    cfg = config.load(None, {"detect": {"classes": "person, car"}})
    assert cfg.detect.classes == ["person", "car"]


def test_every_setting_is_described():
    rows = config.describe()
    keys = {key for key, _, _ in rows}
    assert {"model.device", "source.uri", "detect.score_threshold", "output.jsonl"} <= keys
    assert all(help_text for _, _, help_text in rows)

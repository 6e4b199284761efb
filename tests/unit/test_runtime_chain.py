"""The runtime chain with fakes of the documented module layouts (the real LiteRT is tested too)."""

import logging
import sys
import types

import pytest

from edge.errors import ConfigError, RuntimeChainError
from edge.runtime import interpreter as chain


@pytest.fixture
def cli_logging():
    """cli.main() sets the `edge.runtime` logger to WARNING (no -v); put it back for the next tests."""
    logger = logging.getLogger("edge.runtime")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def fresh_cache():
    chain.load_runtime.cache_clear()
    yield
    chain.load_runtime.cache_clear()


def test_litert_is_preferred_when_installed():
    runtime = chain.load_runtime()
    assert runtime.name == "ai-edge-litert"
    assert runtime.OpResolverType is not None


def _block(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError


def test_falls_back_to_tflite_runtime_and_logs_why(monkeypatch, caplog):
    _block(monkeypatch, "ai_edge_litert.interpreter")
    _block(monkeypatch, "ai_edge_litert")
    fake_pkg = types.ModuleType("tflite_runtime")
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = type("Interpreter", (), {})
    fake.load_delegate = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake_pkg)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    caplog.set_level("INFO")
    runtime = chain.load_runtime()
    assert runtime.name == "tflite-runtime"
    assert runtime.Interpreter is fake.Interpreter
    assert "ai-edge-litert unavailable" in caplog.text


def test_numpy_abi_failure_is_explained(monkeypatch):
    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "tflite_runtime":
                raise ImportError("A module that was compiled using NumPy 1.x cannot be run in NumPy 2.0.0")
            return None

    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)
    probe = {p.name: p for p in chain.probe_runtimes()}["tflite-runtime"]
    assert "built for numpy 1.x" in probe.error


def test_nothing_importable(monkeypatch):
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                   "tflite_runtime.interpreter", "tensorflow", "tensorflow.lite"):
        _block(monkeypatch, module)
    with pytest.raises(RuntimeChainError, match="pip install ai-edge-litert"):
        chain.load_runtime()


def test_unknown_runtime_name():
    with pytest.raises(ConfigError, match="unknown runtime 'tflite'"):
        chain.load_runtime("tflite")


def _fake_tflite_runtime(monkeypatch, interpreter=None):
    """tflite_runtime.interpreter as the wheel lays it out; records whether it was imported."""
    imported = []
    pkg = types.ModuleType("tflite_runtime")
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = interpreter or type("Interpreter", (), {"__init__": lambda self, **kw: None})
    fake.load_delegate = lambda *a, **k: None

    class Finder:   # serves the fake modules through the import system, so an import is seen
        def find_spec(self, name, path=None, target=None):
            if name in ("tflite_runtime", "tflite_runtime.interpreter"):
                imported.append(name)
                from importlib.machinery import ModuleSpec
                module = pkg if name == "tflite_runtime" else fake
                loader = types.SimpleNamespace(create_module=lambda spec: module, exec_module=lambda m: None)
                return ModuleSpec(name, loader, is_package=name == "tflite_runtime")
            return None

    for name in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)
    return imported


def _installed(monkeypatch, numpy, tflite_runtime="2.14.0"):
    real = chain._dist_version
    monkeypatch.setattr(chain, "_dist_version",
                        lambda dist: tflite_runtime if dist == "tflite-runtime" else real(dist))
    monkeypatch.setattr(chain, "_numpy_version", lambda: numpy)


def test_tflite_runtime_2_14_under_numpy_2_is_unusable_and_not_imported(monkeypatch):
    # tflite-runtime 2.14 imports under numpy 2 with only a printed warning; its first Interpreter
    # then fails with a SystemError. It must be reported unusable, not "available".
    imported = _fake_tflite_runtime(monkeypatch)
    _installed(monkeypatch, numpy="2.2.6")
    probe = {p.name: p for p in chain.probe_runtimes()}["tflite-runtime"]
    assert probe.version == "2.14.0"
    assert "built against numpy 1.x, unusable with numpy 2.2.6" in probe.error
    assert "numpy<2" in probe.error
    with pytest.raises(RuntimeChainError, match=r"tflite-runtime: built against numpy 1.x.*numpy<2"):
        chain.load_runtime("tflite-runtime")
    assert imported == []


def test_tflite_runtime_2_14_under_numpy_1_loads(monkeypatch):
    imported = _fake_tflite_runtime(monkeypatch)
    _installed(monkeypatch, numpy="1.26.4")
    runtime = chain.load_runtime("tflite-runtime")
    assert runtime.name == "tflite-runtime" and runtime.version == "2.14.0"
    assert "tflite_runtime.interpreter" in imported


def test_auto_skips_an_unusable_tflite_runtime_and_says_why(monkeypatch, caplog):
    _block(monkeypatch, "ai_edge_litert.interpreter")
    _block(monkeypatch, "ai_edge_litert")
    _fake_tflite_runtime(monkeypatch)
    _installed(monkeypatch, numpy="2.0.0")
    caplog.set_level("INFO")
    runtime = chain.load_runtime()
    assert runtime.name == "tensorflow"
    assert "runtime tflite-runtime unavailable (built against numpy 1.x" in caplog.text


def test_a_system_error_from_the_interpreter_is_a_one_line_error(monkeypatch):
    def broken(self, **kwargs):
        raise SystemError("<built-in method CreateWrapperFromFile> returned a result with an exception set")

    _fake_tflite_runtime(monkeypatch, interpreter=type("Interpreter", (), {"__init__": broken}))
    _installed(monkeypatch, numpy="1.26.4", tflite_runtime=None)   # no metadata: the probe cannot tell
    runtime = chain.load_runtime("tflite-runtime")
    with pytest.raises(RuntimeChainError, match="cannot create an interpreter with numpy 1.26.4.*numpy<2"):
        runtime.make_interpreter("model.tflite")


def _probes(litert=None, tflite=None, tf=None):
    return [chain.Probe("ai-edge-litert", "2.3.0", litert), chain.Probe("tflite-runtime", "2.14.0", tflite),
            chain.Probe("tensorflow", "2.21.0", tf)]


def test_info_marks_the_runtime_that_runtime_flag_chooses():
    lines = chain.describe_runtimes(_probes(), "tflite-runtime")
    assert lines[0] == "    ai-edge-litert 2.3.0: available, not used (tflite-runtime is used)"
    assert lines[1] == "  * tflite-runtime 2.14.0: loaded (this one is used: --runtime tflite-runtime)"
    auto = chain.describe_runtimes(_probes())
    assert auto[0].startswith("  * ai-edge-litert 2.3.0: loaded") and auto[1].endswith("(ai-edge-litert is used)")


def test_info_says_the_chosen_runtime_is_unusable():
    lines = chain.describe_runtimes(_probes(tflite="built against numpy 1.x, unusable"), "tflite-runtime")
    assert lines[1] == "  ! tflite-runtime 2.14.0: built against numpy 1.x, unusable (asked for by --runtime: edge run fails)"
    assert not any(line.startswith("  *") for line in lines)
    assert chain.used_runtime(_probes(tflite="x"), "tflite-runtime") is None


def test_cli_runtime_tflite_runtime_under_numpy_2_is_one_line_exit_2(monkeypatch, capsys, tmp_path, cli_logging):
    from edge import cli

    _fake_tflite_runtime(monkeypatch)
    _installed(monkeypatch, numpy="2.2.6")
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--runtime", "tflite-runtime", "--max-frames", "1", "--jsonl", "", "--live", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [e for e in err if e.startswith("edge: error: ")] and len(err) == 1
    assert "tflite-runtime: built against numpy 1.x, unusable with numpy 2.2.6" in err[0]

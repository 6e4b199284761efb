"""The runtime chain with fakes of the documented module layouts (the real LiteRT is tested too)."""

import sys
import types

import pytest

from edge.errors import ConfigError, RuntimeChainError
from edge.runtime import interpreter as chain


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

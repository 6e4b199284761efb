"""Host toolchain (``edge-host``): quantize, export, compile, evaluate, bundle.

Runs on a workstation with TensorFlow (``pip install 'edge-detect[host]'``). Nothing on the
device imports this package; TensorFlow itself is imported lazily, inside the commands.
"""

"""How much of a model a delegate (on the CPU: XNNPACK) really runs.

XNNPACK is the CPU runtime's default delegate, but it takes only the nodes it supports: the others
stay on TFLite's reference kernels, and every switch between the two splits the graph into one more
*partition*. A model XNNPACK takes whole runs as one partition; an int8 model with standalone
RELU nodes (which XNNPACK runs in float only) ran as 18 partitions and 2.5x slower than its
float twin. :func:`delegation` reads the share from an allocated interpreter; :func:`measure`
opens a model file for that.

It works the same under ai-edge-litert, tflite-runtime and tensorflow.lite: it needs only the
interpreter's ``_get_ops_details()``. After delegation that lists the model's own nodes first,
then one ``DELEGATE`` node per partition, whose inputs and outputs are the partition's boundary
tensors. The nodes a partition replaced are found by walking back from its outputs to its inputs
through the producing nodes; what is left runs on the CPU's reference kernels. Only the primary
subgraph (index 0) is examined, the one every edge model runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How LiteRT / TFLite name a delegate kernel node (builtin code kTfLiteBuiltinDelegate) and how
# older runtimes name XNNPACK's registration.
DELEGATE_NODE_NAMES = frozenset({"DELEGATE", "TfLiteXNNPackDelegate"})


@dataclass(frozen=True)
class XnnpackShare:
    """The delegated share of a model's primary subgraph.

    ``partitions``: delegate nodes (0: the delegate took nothing or was not applied);
    ``delegated_nodes`` of ``total_nodes`` model nodes run inside them; ``cpu_ops`` counts the op
    names of the nodes left to the reference kernels.
    """

    partitions: int
    delegated_nodes: int
    total_nodes: int
    cpu_ops: Counter = field(default_factory=Counter)

    @property
    def applied(self) -> bool:
        """The delegate took at least one node (else everything runs on the reference kernels)."""
        return self.partitions > 0

    @property
    def whole(self) -> bool:
        """The delegate runs every node, as a single partition."""
        return self.partitions == 1 and self.delegated_nodes == self.total_nodes

    @property
    def fraction(self) -> float:
        return self.delegated_nodes / self.total_nodes if self.total_nodes else 0.0

    def describe(self) -> str:
        """One line, e.g. ``18 partitions, 77/94 nodes delegated; on the CPU: 17 RELU``."""
        text = (f"{self.partitions} partition{'s' if self.partitions != 1 else ''}, "
                f"{self.delegated_nodes}/{self.total_nodes} nodes delegated")
        if self.cpu_ops:
            text += "; on the CPU: " + ", ".join(f"{n} {op}" for op, n in self.cpu_ops.most_common())
        return text

    def as_dict(self) -> dict:
        return {"partitions": self.partitions, "delegated_nodes": self.delegated_nodes,
                "total_nodes": self.total_nodes, "cpu_ops": dict(self.cpu_ops.most_common())}


def delegation(interpreter: Any) -> XnnpackShare:
    """The delegated share of ``interpreter``'s primary subgraph.

    Call it after ``allocate_tensors()``: LiteRT applies its default delegate (XNNPACK) lazily,
    at the first allocation; before it every node looks undelegated. Counts every delegate's
    nodes (with the Edge TPU delegate loaded, the Edge TPU's).
    """
    ops = interpreter._get_ops_details()
    first = next((i for i, op in enumerate(ops) if op["op_name"] in DELEGATE_NODE_NAMES), len(ops))
    nodes, delegates = ops[:first], ops[first:]
    producer = {int(t): i for i, op in enumerate(nodes) for t in op["outputs"]}
    covered: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        seen: set[int] = set()
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor in seen or tensor not in producer:
                continue   # a partition input, already walked, or a constant / graph input
            seen.add(tensor)
            node = producer[tensor]
            if node not in covered:
                covered.add(node)
                stack.extend(int(t) for t in nodes[node]["inputs"] if t >= 0)
    cpu = Counter(op["op_name"] for i, op in enumerate(nodes) if i not in covered)
    return XnnpackShare(len(delegates), len(covered), len(nodes), cpu)


def measure(model_path: str | Path, runtime: Any = None, threads: int = 1) -> XnnpackShare:
    """Open ``model_path`` on the CPU with XNNPACK (``runtime``: an
    :class:`edge.runtime.interpreter.Runtime`, default the first of the chain), allocate, measure."""
    if runtime is None:
        from edge.runtime.interpreter import load_runtime
        runtime = load_runtime()
    interpreter = runtime.make_interpreter(str(model_path), num_threads=threads)
    interpreter.allocate_tensors()
    return delegation(interpreter)

"""Cached-prefix execution: recompute only the part of the graph a layer reset changes.

The model is traced once with ``torch.fx``. Resetting layer L changes the values of the
nodes that depend on L (its "affected" set, L included) and nothing upstream. Per batch we
run the unmodified graph once and keep the values that affected sets read from outside
themselves (their "frontier": the input of L, residual/skip inputs, ...). A reset of L then
evaluates only its affected nodes, in graph order, reading the frontier from that cache.

Memory: only frontier values are kept, for the current batch only, so the cache holds at
most one batch's worth of those activations (``cache_bytes`` after :meth:`run_base`);
``--batch-size`` bounds it. Values nothing needs are dropped as soon as the base pass is
past their last use.
"""
from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

import timm.models._features_fx as timm_fx
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import Message

log = logging.getLogger("layercrit")

# In-place operators would overwrite cached values; they are rewritten to their
# out-of-place twins (identical arithmetic).
_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


class _Tracer(fx.Tracer):
    """fx tracer that respects timm's "do not trace" modules and functions; ``keep``: a module path kept as one
    node (the measured output module), so that its output is a value of the graph."""

    def __init__(self, keep: str | None = None) -> None:
        leaf_types: tuple[type[nn.Module], ...] = ()
        autowrap: tuple[Callable[..., Any], ...] = ()
        try:
            leaf_types = tuple(timm_fx.get_notrace_modules())
            autowrap = tuple(timm_fx.get_notrace_functions())
        except Exception:  # timm's private helpers moved or changed: plain fx
            pass
        self._leaf_types = leaf_types
        self._keep = keep
        super().__init__(autowrap_functions=autowrap)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname == self._keep or isinstance(m, self._leaf_types) or super().is_leaf_module(m, qualname)


def _make_out_of_place(graph: fx.Graph) -> None:
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
            node.target = _INPLACE_FUNCTIONS[node.target]
        elif node.op == "call_method" and node.target.endswith("_") and not node.target.endswith("__"):
            if hasattr(torch.Tensor, node.target[:-1]):
                node.target = node.target[:-1]
        if "inplace" in node.kwargs and node.kwargs["inplace"]:
            node.kwargs = {**node.kwargs, "inplace": False}


class CachedGraph:
    """A traced model that can re-evaluate just the part of the graph below one layer."""

    def __init__(self, model: nn.Module, layer_paths: list[str], output_path: str | None = None):
        """``layer_paths``: module paths inside ``model`` (e.g. ``model.layer1.0.conv1``). ``output_path``: a
        module whose output is what the runs return (default: the model's output); only the nodes it depends on
        are then evaluated."""
        graph = _Tracer(keep=output_path).trace(model)
        _make_out_of_place(graph)
        self.gm = fx.GraphModule(model, graph)
        self.nodes = self._all = list(self.gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        if output_path is None:
            self.output = next(n for n in self.nodes if n.op == "output")
        else:
            found = [n for n in self.nodes if n.op == "call_module" and n.target == output_path]
            if len(found) != 1:
                raise ValueError(f"the output module {output_path} is {len(found)} nodes of the traced graph, not one")
            self.output = found[0]
            needed = _ancestors(self.output)
            self.nodes = [n for n in self.nodes if n in needed]  # nothing after the output module is evaluated
        kept = set(self.nodes)
        self.affected: dict[str, list[fx.Node]] = {}
        self._frees: dict[str, list[list[fx.Node]]] = {}
        frontier: set[fx.Node] = set()
        for path in layer_paths:
            nodes = self._affected(path)
            if nodes is None:
                raise ValueError(f"layer {path} does not appear in the traced graph")
            nodes = [n for n in nodes if n in kept]
            self.affected[path] = nodes
            self._frees[path] = self._free_plan(nodes)
            inside = set(nodes)
            for n in nodes:
                frontier.update(a for a in n.all_input_nodes if a not in inside)
        self.frontier = frontier
        # last use of each node in the base pass, so values no one needs can be dropped early
        self._last_use = {}
        for n in self.nodes:
            for a in n.all_input_nodes:
                self._last_use[a] = n
        self.cache: dict[fx.Node, Any] = {}
        self._base: Any = None  # the output of the last run_base (what a reset that cannot change it returns)

    @staticmethod
    def _free_plan(nodes: list[fx.Node]) -> list[list[fx.Node]]:
        """For each node of an affected set, the set's values no later node of the set reads.

        Freeing them at once lets the allocator reuse their memory (fresh allocations of large
        activations are slow on CPUs) and bounds the recomputation's working memory.
        """
        inside = set(nodes)
        last: dict[fx.Node, fx.Node] = {}
        for n in nodes:
            for a in n.all_input_nodes:
                if a in inside:
                    last[a] = n
        plan: dict[fx.Node, list[fx.Node]] = {n: [] for n in nodes}
        for value, user in last.items():
            plan[user].append(value)
        return [plan[n] for n in nodes]

    def _affected(self, path: str) -> list[fx.Node] | None:
        """Nodes whose value depends on ``path``'s parameters, in graph order."""
        seeds = [n for n in self._all  # the module, a leaf containing it, or (a block) any module inside it
                 if (n.op == "call_module" and (n.target == path or path.startswith(n.target + ".")
                                                or n.target.startswith(path + ".")))
                 or (n.op == "get_attr" and n.target.startswith(path + "."))]
        if not seeds:
            return None
        seen = set(seeds)
        stack = list(seeds)
        while stack:
            for user in stack.pop().users:
                if user not in seen:
                    seen.add(user)
                    stack.append(user)
        return sorted(seen, key=self.order.__getitem__)

    def _call(self, node: fx.Node, env: Callable[[fx.Node], Any]) -> Any:
        args: Any = fx.node.map_arg(node.args, env)
        kwargs: Any = fx.node.map_arg(node.kwargs, env)
        target: Any = node.target  # a module path or method name (str) or a function, by node.op
        if node.op == "call_module":
            return self.gm.get_submodule(target)(*args, **kwargs)
        if node.op == "call_function":
            return target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            obj: Any = self.gm
            for part in target.split("."):
                obj = getattr(obj, part)
            return obj
        if node.op == "output":
            return args[0]
        raise RuntimeError(f"unexpected fx node {node.op}")

    def run_base(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the unmodified model, keeping the frontier values for :meth:`run_reset`."""
        values: dict[fx.Node, Any] = {}
        self.cache = {}
        result: Any = None
        for node in self.nodes:
            if node.op == "placeholder":
                values[node] = x
            else:
                values[node] = self._call(node, values.__getitem__)
            if node in self.frontier:
                self.cache[node] = values[node]
            if node is self.output:
                result = values[node]
            for a in node.all_input_nodes:  # free what no later node reads
                if self._last_use.get(a) is node:
                    values.pop(a, None)
        self._base = result
        return result

    def run_reset(self, path: str) -> torch.Tensor:
        """Evaluate the output with ``path``'s current (reset) parameters, from the cache."""
        values: dict[fx.Node, Any] = {}

        def lookup(n: fx.Node) -> Any:
            return values[n] if n in values else self.cache[n]

        if not self.affected[path]:  # the output module runs before this layer: the reset cannot change it
            return self._base
        for node, frees in zip(self.affected[path], self._frees[path]):
            values[node] = self._call(node, lookup)
            for f in frees:
                if f is not self.output:
                    del values[f]
        return values[self.output]

    @property
    def cache_bytes(self) -> int:
        return sum(_nbytes(v) for v in self.cache.values())


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node its value depends on."""
    seen, stack = {node}, [node]
    while stack:
        for a in stack.pop().all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def try_cached_graph(model: nn.Module, layer_paths: list[str], output_path: str | None = None) -> CachedGraph | None:
    """A :class:`CachedGraph`, or None (with a one-line warning) where the model cannot be traced."""
    try:
        return CachedGraph(model, layer_paths, output_path)
    except Exception as e:
        log.warning(Message(f"cannot trace {type(model).__name__} for the cached engine ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:100] if str(e) else ''}); using {{engine}} naive"))
        return None

"""The package's shape: imports between subpackages go one way (no circles), and the engine stands alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "layercrit"


def _module_name(path: Path) -> tuple[str, ...]:
    parts = ("layercrit", *path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _subpackage(parts: tuple[str, ...]) -> str | None:
    """The subpackage (``engine``, ``models``, ...) a module belongs to; None for top-level modules."""
    return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else None


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(from subpackage, to subpackage) -> where (file:line), for every import statement in src/layercrit,
    at module level or inside functions alike."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path)
        package = mod if path.name == "__init__.py" else mod[:-1]
        source = _subpackage(mod)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[tuple[str, ...]] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    full = (*base, *(node.module.split(".") if node.module else ()))
                else:
                    full = tuple((node.module or "").split("."))
                if full[0] != "layercrit":
                    continue
                # "from .. import engine" imports the subpackage engine; "from ..engine import x" imports engine
                targets = [(*full, a.name) for a in node.names] if len(full) == 1 else [full]
            elif isinstance(node, ast.Import):
                targets = [tuple(a.name.split(".")) for a in node.names if a.name.split(".")[0] == "layercrit"]
            for target in targets:
                dest = _subpackage(target)
                if source and dest and source != dest:
                    edges.setdefault((source, dest), []).append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    return edges


def find_cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_between_subpackages():
    edges = import_edges()
    assert ("cli", "engine") in edges and ("engine", "models") in edges  # the graph is really built
    cycle = find_cycle(edges)
    if cycle:
        where = "; ".join(f"{a} -> {b} at {', '.join(edges[a, b][:3])}" for a, b in zip(cycle, cycle[1:]))
        raise AssertionError(f"import cycle {' -> '.join(cycle)}: {where}")


def test_find_cycle_finds_one():
    assert find_cycle({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == ["a", "b", "c", "a"]
    assert find_cycle({("a", "b"): [], ("a", "c"): [], ("b", "c"): []}) is None


def test_engine_imports_no_scale_ray_or_cli():
    code = ("import sys, layercrit.engine\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'layercrit.scale', "
            "'layercrit.cli'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert not [k for k in import_edges() if k[0] == "engine" and k[1] in ("scale", "cli")]


def test_measure_takes_model_data_config_by_position_and_the_rest_by_keyword():
    # issue 23 made the common options explicit keywords (help() and IDE completion show them); what keeps the
    # signature readable is that only the model, the data and a config are positional
    import inspect

    import layercrit as lc

    params = inspect.signature(lc.measure).parameters
    assert list(params)[:3] == ["model", "data", "config"]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in list(params.values())[3:])
    assert {"store", "executor", "device", "progress"} <= set(params)


def test_no_submodule_shadows_a_public_name():
    """Importing a submodule binds it on its package, so a submodule named like a name the package exports
    (engine/measure.py beside ``engine.measure``) turns ``lc.measure`` into a module once someone imports the
    submodule directly. Checked in a fresh interpreter after importing every submodule first."""
    script = """
import importlib, pkgutil, types, layercrit
for info in pkgutil.walk_packages(layercrit.__path__, 'layercrit.'):
    if '.scale.ray' in info.name or info.name.endswith('__main__'):
        continue  # Ray is an extra; its package is checked like the rest when installed
    importlib.import_module(info.name)
bad = []
for name, module in list(__import__('sys').modules.items()):
    if not name.startswith('layercrit') or not hasattr(module, '__path__'):
        continue
    for public in getattr(module, '__all__', []):
        if isinstance(getattr(module, public), types.ModuleType):
            bad.append(f'{name}.{public}')
print(bad)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out

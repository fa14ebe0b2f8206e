"""The package's layers import downward only, and no modules import each other in a circle.

Every ``import`` of the package (module level or inside a function) is read from the source. A
module may import modules of its own layer or below; the app's own modules are ordered by the flow
of a run (entry -> skeleton -> engines -> their libraries)."""

import ast
from pathlib import Path

import ns_plugins

ROOT = Path(ns_plugins.__file__).resolve().parent

# (module prefix, layer): the longest matching prefix gives a module's layer
LAYERS = [
    ("ns_plugins.errors", 0),
    ("ns_plugins.core.checks", 0),
    ("ns_plugins.core.reference", 0),
    ("ns_plugins.kernels.prefetch", 0),
    ("ns_plugins.kernels.merge", 0),
    ("ns_plugins.kernels", 1),
    ("ns_plugins.core", 2),
    ("ns_plugins.data", 3),
    ("ns_plugins.embeddings", 3),
    ("ns_plugins.engines", 4),
    ("ns_plugins.chainer", 5),
    ("ns_plugins.nn", 5),
    ("ns_plugins.word2vec", 5),
    ("ns_plugins.hydra_searchpath", 5),
    ("ns_plugins.app", 6),
    ("ns_plugins.report", 6),
    ("ns_plugins.app.engines", 7),
    ("ns_plugins.app.datamodule", 7),
    ("ns_plugins.app.callbacks", 7),
    ("ns_plugins.app.checkpoints", 7),
    ("ns_plugins.app.local_sgd", 7),
    ("ns_plugins.app.progress", 7),
    ("ns_plugins.app.skeleton", 8),
    ("ns_plugins.app.launch", 9),
    ("ns_plugins.app.cli", 10),
]


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len,
               default=None)  # fmt: skip
    return 5 if best is None else dict(LAYERS)[best]  # the package itself: a face


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports (``from X import y`` counts X.y when that is a
    module, X otherwise)."""
    known = modules()
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("ns_plugins") and t != name:
                found.add(t)
    return found


def test_imports_run_downward_only():
    upward = [
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, path in sorted(modules().items())
        for dep in sorted(imports(name, path))
        if layer(dep) > layer(name) and not name.startswith(dep + ".")
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph = {name: {d for d in imports(name, path) if not name.startswith(d + ".")}
             for name, path in modules().items()}  # fmt: skip
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(cycles)


def test_the_layers_know_every_module():
    """A new module is placed on purpose: under a prefix the table names."""
    unplaced = [
        n for n in modules()
        if n != "ns_plugins" and not any(n == p or n.startswith(p + ".") for p, _ in LAYERS)
    ]  # fmt: skip
    assert not unplaced, unplaced

"""The project's import graph and its layering rules (docs/architecture.md), read from the source with ``ast``.

Every import counts: function-level ones, and a string that names a project module (``"icrt.runtime.backends.
onnxruntime"``, ``"icrt.export.int8:build"``), as registries and ``importlib`` use them. ``icrt.X`` is the repository's
top-level folder ``X`` (pyproject.toml maps them into the namespace). ``python -m tests.layering [ROOT]`` prints what
breaks the rules (exit 1 when anything does); tests/test_layering.py runs the same check.

Between the packages:

    train ───────▶ runtime ◀─────── calibration
      ▲               ▲                  ▲
      └──── export ───┴──────────────────┘        benchmarks: may use all four; nothing imports benchmarks

    icrt (the public API and the console script) ──▶ runtime; train and export only inside functions (LAZY), so that
    ``import icrt`` and ``icrt --help`` never load torch; nothing imports icrt.

Inside the runtime (:data:`RUNTIME`), lowest first: ``base`` (errors, safe files, text, hardware and package facts)
◀ ``bundle`` (the bundle format) ◀ ``backends`` ◀ ``scoring`` (preprocessing, the Scorer, its options, inputs) ◀
``tools`` (bench, doctor, info, output formats) ◀ ``batch`` / ``serving`` / ``report`` ◀ ``cli``.

And everywhere: no module imports the ``__init__`` of a package it belongs to (a plug-in imports its registry's base
module, never its package), and no cycles.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from collections import defaultdict

PACKAGES = ("runtime", "calibration", "train", "export", "benchmarks", "icrt")
# package -> the project packages it may import (besides itself)
ALLOWED = {
    "icrt": {"runtime", "train", "export"},
    "runtime": set(),
    "calibration": {"runtime"},
    "train": {"runtime"},
    "export": {"runtime", "calibration", "train"},
    "benchmarks": {"runtime", "calibration", "train", "export"},
}
# runtime sub-package -> the runtime sub-packages it may import (besides itself); "" is runtime/__init__.py
_BELOW_TOOLS = {"base", "bundle", "backends", "scoring", "tools"}
RUNTIME = {
    "base": set(),
    "bundle": {"base"},
    "backends": {"base", "bundle"},
    "scoring": {"base", "bundle", "backends"},
    "tools": {"base", "bundle", "backends", "scoring"},
    "batch": _BELOW_TOOLS,
    "serving": _BELOW_TOOLS,
    "report": _BELOW_TOOLS | {"batch"},  # it reads batch folders
    "cli": _BELOW_TOOLS | {"batch", "serving", "report"},
    "": {"base", "bundle", "backends", "scoring"},  # the lazy public names of runtime/__init__.py
}
TORCH = {"torch", "torchvision", "timm", "open_clip", "transformers"}
TORCH_FREE = ("runtime", "calibration", "icrt")  # these never import the PyTorch stack
LAZY = {"icrt": {"train", "export"}}  # package -> packages it may import only inside a function
# a string naming a project module, as the registries write them (what ../shared/tools/import_graph.py counts too)
STRING_REF = re.compile(r"^(?:icrt\.)?(?:train|export|runtime|calibration|benchmarks)(?:\.[A-Za-z_]\w*)+"
                        r"(?::[A-Za-z_]\w*)?$")


def modules(root: str) -> dict[str, str]:
    """Dotted module name (repository form: ``runtime.scoring.scorer``) -> file, for every .py file of the project's
    packages."""
    out = {}
    for pkg in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, pkg)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for f in sorted(files):
                if f.endswith(".py"):
                    name = os.path.relpath(os.path.join(folder, f), root)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


def canonical(name: str) -> str:
    """``icrt.runtime.x`` -> ``runtime.x`` (the folder it lives in); other names unchanged."""
    head, _, rest = name.partition(".")
    if head == "icrt" and rest.split(".")[0] in PACKAGES[:-1]:
        return rest
    return name


def _module_level(tree: ast.Module):
    """The nodes of ``tree`` outside function bodies (class bodies, ifs, trys and withs at module level included)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(name: str, path: str, module_level: bool = False) -> list[tuple[str, str | None]]:
    """What ``path`` (module ``name``) imports, wherever the import statement is (``module_level``: only outside
    functions), names in strings included: (module, imported name or None), in repository form."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    for node in (_module_level(tree) if module_level else ast.walk(tree)):
        if isinstance(node, ast.Import):
            out += [(canonical(a.name), None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            out += [(canonical(base), a.name) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and STRING_REF.match(node.value):
            out.append((canonical(node.value.partition(":")[0]), None))
    return out


def graph(root: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> project modules it imports, module -> third-party top-level packages it imports)."""
    mods = modules(root)
    inner, outer = defaultdict(set), defaultdict(set)
    for name, path in mods.items():
        for base, item in imports(name, path):
            # ``from package import module`` runs and reads the package too (as ../shared/tools/import_graph.py
            # counts it): write ``import package.module as module`` to depend on the module alone
            submodule = item and f"{base}.{item}" in mods
            for target in ([f"{base}.{item}", base] if submodule else [base]):
                t = target
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if not t:
                    outer[name].add(target.split(".")[0])
                elif t != name:
                    inner[name].add(t)
    return inner, outer


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for v in sorted(g):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def runtime_layer(module: str) -> str | None:
    """The runtime sub-package of ``module`` (``runtime.scoring.scorer`` -> ``scoring``; ``runtime`` -> ``""``);
    None outside the runtime or for a runtime module that belongs to no layer."""
    parts = module.split(".")
    if parts[0] != "runtime":
        return None
    if len(parts) == 1:
        return ""
    return parts[1] if parts[1] in RUNTIME else None


def problems(root: str) -> list[str]:
    """One line per import against the rules: cycles, imports across the layers (between packages and inside the
    runtime), a package's own ``__init__`` imported from inside it, torch in a torch-free package."""
    inner, outer = graph(root)
    mods = modules(root)
    out = [f"cycle: {' <-> '.join(c)}" for c in cycles(inner)]
    for name in sorted(mods):
        if name.startswith("runtime.") and runtime_layer(name) is None:
            out.append(f"layering: {name} is in no runtime layer ({', '.join(k for k in RUNTIME if k)})")
    for a in sorted(inner):
        pa = a.split(".")[0]
        for b in sorted(inner[a]):
            pb = b.split(".")[0]
            if pb != pa and pb not in ALLOWED[pa]:
                allowed = ", ".join(sorted(ALLOWED[pa])) or "nothing else"
                out.append(f"layering: {a} imports {b} ({pa} may import {allowed})")
            la, lb = runtime_layer(a), runtime_layer(b)
            if la is not None and lb is not None and la != lb and lb not in RUNTIME[la]:
                allowed = ", ".join(sorted(RUNTIME[la])) or "nothing else of the runtime"
                out.append(f"layering: {a} imports {b} (runtime.{la or '__init__'} may import {allowed})")
            if a.startswith(b + ".") and mods[b].endswith("__init__.py"):
                out.append(f"package: {a} imports {b}, the __init__ of its own package (import the module that "
                           "defines the name)")
    for a in sorted(outer):
        if a.split(".")[0] in TORCH_FREE:
            for lib in sorted(outer[a] & TORCH):
                out.append(f"torch-free: {a} imports {lib}")
    for name, path in sorted(mods.items()):
        lazy = LAZY.get(name.split(".")[0], set())
        for base, _ in imports(name, path, module_level=True) if lazy else ():
            if base.split(".")[0] in lazy:
                out.append(f"lazy: {name} imports {base} at module level (only inside a function)")
    return out


def main(argv=None) -> int:
    root = (argv or sys.argv[1:] or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])[0]
    found = problems(root)
    for line in found:
        print(line)
    inner, _ = graph(root)
    print(f"{len(modules(root))} modules, {sum(map(len, inner.values()))} imports between them, "
          f"{len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

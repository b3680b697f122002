"""The package's import graph points one way: no cycle, function-level imports counted."""

import ast
import os

import pytest

import masan_recbole

PACKAGE_DIR = os.path.dirname(os.path.abspath(masan_recbole.__file__))


def modules():
    """Dotted name -> file of every module in the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(PACKAGE_DIR))[:-3]
                dotted = rel.replace(os.sep, ".").removesuffix(".__init__")
                found[dotted] = os.path.join(folder, name)
    return found


def import_graph():
    """module -> the package modules it imports anywhere in its body (not the implicit
    parent packages of a dotted import: Python runs those half-initialised)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        with open(path) as f:
            tree = ast.parse(f.read())
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in known}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if not base.startswith("masan_recbole"):
                    continue
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{base}.{alias.name}"
                    edges.add(sub if sub in known else base)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "masan_recbole.patches.plugin" in graph and graph["masan_recbole.patches.plugin"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_function_level_cycle():
    graph = import_graph()
    # checkpoint is a leaf; an import of the registry inside one of its functions would close
    # registry -> trainer -> checkpoint -> registry.
    graph["masan_recbole.checkpoint"] = graph["masan_recbole.checkpoint"] | {"masan_recbole.registry"}
    assert find_cycle(graph) is not None


@pytest.mark.parametrize("leaf", ["masan_recbole.files", "masan_recbole.checkpoint", "masan_recbole.layers.transformer"])
def test_leaf_modules_import_nothing_above_them(leaf):
    allowed = {"masan_recbole.files"}
    assert import_graph()[leaf] <= allowed


ARCHITECTURE = os.path.join(os.path.dirname(PACKAGE_DIR), "docs", "architecture.md")


def documented_layers():
    """Module -> layer number, from the table in docs/architecture.md."""
    import re

    layers = {}
    with open(ARCHITECTURE) as f:
        for line in f:
            match = re.match(r"\|\s*(\d+) [^|]*\|([^|]*)\|", line)
            if match:
                for name in re.findall(r"`([\w.]+)`", match.group(2)):
                    layers["masan_recbole" if name == "masan_recbole" else f"masan_recbole.{name}"] = int(match.group(1))
    return layers


def layering_violations(graph, layers):
    """Imports that break docs/architecture.md's rules, as readable lines."""
    wrong = []
    for module, imported in graph.items():
        for target in imported:
            if layers[target] > layers[module]:
                wrong.append(f"{module} (layer {layers[module]}) imports {target} (layer {layers[target]})")
            if layers[module] == 3:  # a model: layers, fields, the contract and its own package only
                own = module.rsplit(".", 1)[0] if module.count(".") > 2 else module
                allowed = target in ("masan_recbole.layers", "masan_recbole.layers.transformer",
                                     "masan_recbole.fields", "masan_recbole.precision", "masan_recbole.model.base") \
                    or target.startswith(own)
                if not allowed:
                    wrong.append(f"model {module} imports {target}")
    return wrong


def test_every_module_has_its_layer_in_the_docs():
    layers = documented_layers()
    assert set(modules()) == set(layers), (
        f"in the package, not in docs/architecture.md: {sorted(set(modules()) - set(layers))}; "
        f"in the docs, not in the package: {sorted(set(layers) - set(modules()))}")


def test_imports_point_down_the_documented_layers():
    assert layering_violations(import_graph(), documented_layers()) == []


@pytest.mark.parametrize("module, target", [
    ("masan_recbole.data.bucketing", "masan_recbole.model.base"),  # data must not know the models
    ("masan_recbole.data.all_positions", "masan_recbole.registry"),
    ("masan_recbole.model.base", "masan_recbole.registry"),  # a model must not know the registry
    ("masan_recbole.model.sasrec", "masan_recbole.model.masan.entmax"),  # nor another model
])
def test_the_layering_check_finds_a_wrong_import(module, target):
    graph = import_graph()
    graph[module] = graph[module] | {target}
    assert layering_violations(graph, documented_layers())

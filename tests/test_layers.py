"""The layers of `src/` only point down (docs/architecture.md): every `import src.X` of a module
must name a module of its own layer or of a lower one, the imports between modules must not form
a cycle, and imports inside functions are only for optional dependencies."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lowest first; a module belongs to the first entry that is it or one of its packages
LAYERS = [
    ("base", ["src.errors", "src.config_schema", "src.config", "src.audio", "src.features"]),
    ("data", ["src.data"]),
    ("models", ["src.models"]),
    ("losses and metrics", ["src.losses", "src.metrics"]),
    ("runtime", ["src.runtime"]),
    ("inference", ["src.inference"]),
    ("evaluation, export, plotting", ["src.evaluation", "src.export", "src.plotting"]),
    ("tasks", ["src.tasks"]),
    ("training, importer, command line", ["src.training", "src.svoice_import", "src.cli"]),
]
# imports allowed inside functions: optional dependencies (torch, mindspore_lite, onnxruntime) and
# those slow to import that one function needs (fast_bss_eval: 6 s, pystoi, matplotlib, ...)
OPTIONAL = ("torch", "mindspore_lite", "onnxruntime", "pesq", "pystoi", "fast_bss_eval", "soxr", "matplotlib")


def _modules():
    """{dotted name: path} of every module under src/."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "src")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _layer(module):
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py (add it to LAYERS and docs/architecture.md)")


def _imports(path, modules):
    """[(line, imported src module, at module level)] and [(line, module imported in a function)]."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    top = {id(node) for node in tree.body}
    internal, in_functions = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if id(node) not in top:
            in_functions.append((node.lineno, names[0]))
        for name in names:
            if name in modules and name != "src":
                internal.append((node.lineno, name))
    return internal, in_functions


def test_imports_point_down_without_cycles():
    modules = _modules()
    problems, graph = [], {}
    for module, path in sorted(modules.items()):
        internal, in_functions = _imports(path, modules)
        graph[module] = {name for _, name in internal if name != module}
        for line, name in internal:
            if _layer(name) > _layer(module):
                problems.append(f"{module}:{line} imports {name} of the higher layer '{LAYERS[_layer(name)][0]}'")
        for line, name in in_functions:
            if not name.split(".")[0] in OPTIONAL:
                problems.append(f"{module}:{line} imports {name} inside a function (only optional dependencies may)")
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                problems.append("import cycle: " + " -> ".join(trail[trail.index(name):] + [name]))
            elif name not in state:
                visit(name, trail + [name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not problems, "\n".join(problems)

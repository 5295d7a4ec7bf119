"""How glassformer.archs is put together: no import cycles, no imports hidden inside functions, no attribute
probing, and the sparsity sites a config leaves off are identities."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from glassformer.archs import AbsTopK, ModelConfig, build_model
from glassformer.archs.activation_sparsity import SITES

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ROOT / "archs"
PACKAGE = "glassformer.archs"

# archs/weight_sparsity.py belongs to another change in flight; it still imports its checks from
# glassformer.archs.config (which imports it back) and imports the kernels inside project_. Remove these two
# entries once it imports from glassformer.archs.validation and imports the kernels at the top.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
KNOWN_NESTED_IMPORTS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ARCHS).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((PACKAGE, *parts))


MODULES = {module_name(p): p for p in sorted(ARCHS.rglob("*.py"))}


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def imports(tree: ast.AST, top_level: bool) -> list[str]:
    """Modules imported at module level (``top_level``) or inside functions and classes (not ``top_level``);
    ``from P import X`` names P.X when that is a module (or P is the ``glassformer`` namespace), else P. ``if TYPE_CHECKING:`` blocks count as top level."""
    body_nodes = {id(n) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    nested = set()
    for node in ast.walk(tree):
        if id(node) in body_nodes:
            nested |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or (id(node) in nested) == top_level:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif node.module is not None:
            # ``glassformer`` is a namespace of packages: ``from glassformer import kernels`` imports a package.
            out += [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES or node.module == "glassformer"
                    else node.module for a in node.names]
    return out


def import_graph() -> dict[str, set[str]]:
    """Edges between archs modules: importing a module also runs its packages' ``__init__`` (except those the
    importer is already inside, which Python has started before it)."""
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for target in imports(ast.parse(path.read_text()), top_level=True):
            for t in [target, *ancestors(target)]:
                if t in MODULES and t != name and (t == target or t not in ancestors(name)):
                    edges.add(t)
        graph[name] = edges - {t for (src, t) in KNOWN_CYCLE_EDGES if src == name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as the list of its modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_archs_modules_import_each_other_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # And on the real modules: an import of config from the MLP base (which config imports) is a cycle.
    graph = import_graph()
    graph["glassformer.archs.mlp.base"] = graph["glassformer.archs.mlp.base"] | {"glassformer.archs.config"}
    assert graph["glassformer.archs.config"] and find_cycle(graph) is not None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_archs_module_imports_inside_a_function(name):
    nested = set(imports(ast.parse(MODULES[name].read_text()), top_level=False))
    assert nested <= {t for (src, t) in KNOWN_NESTED_IMPORTS if src == name}


@pytest.mark.parametrize("path", sorted(ARCHS.rglob("*.py")) + sorted((ROOT / "analysis").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_attribute_probing_with_hasattr(path):
    calls = [n for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr"]
    assert not calls, f"{path.name} line {calls[0].lineno}: declare the capability in a contract instead"


def test_disabled_sparsity_sites_are_identities_and_enabled_ones_abstopk():
    cfg = ModelConfig(d_vocab=30, n_ctx=8, d_model=16, n_layers=1, n_heads=2, d_mlp=32,
                      activation_sparsity={"sites": ["k", "mlp_in"], "fraction": 0.5})
    for model, on in ((build_model(cfg), {"k", "mlp_in"}), (build_model(ModelConfig(**{
            **cfg.to_dict(), "activation_sparsity": None})), set())):
        block = model.blocks[0]
        for site in SITES:
            module = getattr(block.attn if site in "qkv" else block, f"sparsify_{site}")
            assert isinstance(module, AbsTopK if site in on else nn.Identity), site
        x = torch.randn(2, 3, 16)
        if not on:
            assert block.sparsify_mlp_in(x) is x  # an off site hands its input through untouched

"""The data flow runs one way, as the README's architecture section states: no module imports from a layer
above its own. The order is read from the README, so the rule and its statement cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import muon_ad

README = Path(__file__).resolve().parents[1] / "README.md"
# Top-level modules outside the layered folders: infrastructure every layer may use, and the two entry files.
INFRASTRUCTURE = {"checks", "config", "errors", "io", "__init__"}
PLACED = {"visual": "data", "__main__": "cli"}  # visual.py draws with data's image conversion


def layer_order(readme: Path = README) -> list[set[str]]:
    """The README's `data → models → attention/optim → ...` line as ranked sets of layer names."""
    line = re.search(r"^Layers, in order: (.+)$", readme.read_text(), re.M)
    assert line, "README.md must state the layer order on a line 'Layers, in order: data → models → ...'"
    return [set(step.strip().split("/")) for step in line.group(1).split("→")]


def layer_of(module: str) -> str | None:
    """'muon_ad.distill.objective' -> 'distill'; infrastructure -> None (importable from anywhere)."""
    top = module.split(".")[1] if module.count(".") else "__init__"
    return None if top in INFRASTRUCTURE else PLACED.get(top, top)


def back_imports(package_root: Path, order: list[set[str]]) -> list[str]:
    """Every `file: imports X` where X's layer ranks above the file's own (imports inside functions count)."""
    rank = {name: i for i, names in enumerate(order) for name in names}
    found = []
    for path in sorted(package_root.rglob("*.py")):
        module = ".".join(("muon_ad", *path.relative_to(package_root).with_suffix("").parts))
        own = layer_of(module.removesuffix(".__init__"))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                if not name.startswith("muon_ad."):
                    continue
                target = layer_of(name)
                if target is None:
                    continue
                assert target in rank, f"{name}: layer '{target}' is missing from the README's order"
                if own is None:
                    found.append(f"{path.name}: infrastructure imports {name}")
                elif rank[target] > rank[own]:
                    found.append(f"{path.relative_to(package_root)}: {own} imports {name} ({target} is above it)")
    return found


def test_every_module_belongs_to_a_layer_of_the_readme():
    order = {name for names in layer_order() for name in names}
    root = Path(muon_ad.__file__).parent
    folders = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders <= order, folders - order
    assert {"data", "models", "training", "runtime", "eval", "recipes", "bench", "demo", "cli"} <= order


def test_no_import_runs_back_up_the_data_flow():
    assert back_imports(Path(muon_ad.__file__).parent, layer_order()) == []


def test_the_check_catches_a_back_import(tmp_path):
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "backends.py").write_text("def f():\n    from muon_ad.recipes.distill import DistillConfig\n")
    assert back_imports(tmp_path, layer_order()) == [
        "runtime/backends.py: runtime imports muon_ad.recipes.distill (recipes is above it)"]

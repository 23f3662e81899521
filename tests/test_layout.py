"""The module boundaries of DESIGN section 1, checked from the code (ast), so they stay true:

- models/ is a leaf: it imports only models/ and tasks.base;
- no module imports a `_private` name of another module;
- nothing imports camtl_jax/cli/ except the commands themselves (cli/ and the training entry
  main.py);
- every console script in pyproject.toml is a `main` in cli/ (or main.py);
- train.py stays a step-and-loop module (<= 500 lines).
"""
import ast
import re
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "camtl_jax"
ENTRY_POINTS = ("camtl_jax.main",)


def _module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
  return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def _imports(tree: ast.Module, module: str) -> list[tuple[str, list[str]]]:
  """(imported module, names taken from it) for every import of camtl_jax code, anywhere in the
  module (function-level imports included)."""
  package = module.rsplit(".", 1)[0]
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(alias.name, []) for alias in node.names if alias.name.startswith("camtl_jax")]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base])
      if base.startswith("camtl_jax"):
        found.append((base, [alias.name for alias in node.names]))
  return found


def _targets(imported: str, names: list[str], modules: dict) -> list[str]:
  """The modules an import reaches: `from camtl_jax.models import bert` reaches models.bert."""
  submodules = [f"{imported}.{n}" for n in names if f"{imported}.{n}" in modules]
  return submodules or [imported]


def test_models_is_a_leaf():
  modules = _modules()
  allowed = re.compile(r"camtl_jax\.(models(\..*)?|tasks\.base)$")
  bad = [f"{m} imports {t}" for m, tree in modules.items() if m.startswith("camtl_jax.models")
         for imported, names in _imports(tree, m) for t in _targets(imported, names, modules)
         if not allowed.match(t)]
  assert not bad, bad


def test_no_module_imports_another_modules_private_names():
  modules = _modules()
  bad = []
  for m, tree in modules.items():
    for imported, names in _imports(tree, m):
      if imported != m:
        bad += [f"{m}: from {imported} import {n}" for n in names if n.startswith("_")]
    for node in ast.walk(tree):  # module._name attribute access on an imported module alias
      if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
          and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
          and node.value.id in _module_aliases(tree, m, modules)):
        bad.append(f"{m}: {node.value.id}.{node.attr}")
  assert not bad, bad


def _module_aliases(tree: ast.Module, module: str, modules: dict) -> set[str]:
  """Local names bound to other camtl_jax modules by this module's imports."""
  aliases = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("camtl_jax"):
      aliases |= {a.asname or a.name for a in node.names
                  if f"{node.module}.{a.name}" in modules and f"{node.module}.{a.name}" != module}
    elif isinstance(node, ast.Import):
      aliases |= {a.asname for a in node.names if a.asname and a.name in modules}
  return aliases


def test_nothing_imports_the_commands():
  modules = _modules()
  bad = [f"{m} imports {t}" for m, tree in modules.items()
         if not m.startswith("camtl_jax.cli") and m not in ENTRY_POINTS
         for imported, names in _imports(tree, m) for t in _targets(imported, names, modules)
         if t.startswith("camtl_jax.cli")]
  assert not bad, bad


def test_every_console_script_is_a_thin_command_module():
  scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
  for name, target in scripts.items():
    module, _, function = target.partition(":")
    assert function == "main", name
    assert module.startswith("camtl_jax.cli.") or module in ENTRY_POINTS, (name, module)


def test_train_is_the_step_and_the_loop():
  assert len((PACKAGE / "train.py").read_text().splitlines()) <= 500

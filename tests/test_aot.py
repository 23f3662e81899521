"""The train step built from shapes alone (train.build_step: named encoder shapes, registry task
specs), and camtl-compile-tpu, which needs libtpu (the `tpu` extra).

libtpu makes every JAX process probe for a TPU, so CI keeps it out of the test environment: it
installs it into a directory of its own (`pip install --target .libtpu "libtpu==0.0.42.*"`) named
by $CAMTL_LIBTPU_DIR, and only the camtl-compile-tpu subprocess gets it on its PYTHONPATH. With
neither that nor an installed libtpu the compile test is skipped, saying so."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from camtl_jax import experiment, sharding, train
from camtl_jax.perf import aot
from camtl_jax.models import camtl
from camtl_jax.configs import mtl24_large, tiny

REPO = Path(__file__).resolve().parents[1]
HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
LIBTPU_DIR = os.environ.get("CAMTL_LIBTPU_DIR", "")
HAVE_LIBTPU_DIR = bool(LIBTPU_DIR) and (Path(LIBTPU_DIR) / "libtpu").is_dir()


@pytest.mark.parametrize("name, params", [
    # The plain HF models' parameter counts (BertModel / RobertaModel with pooler).
    ("bert-base", 109_482_240), ("bert-large", 335_141_888),
    ("roberta-base", 124_645_632), ("roberta-large", 355_359_744)])
def test_named_encoder_shapes_match_published_models(name, params):
  config = tiny.get_config()
  config.unlock()
  config.model_path, config.encoder_layers = name, 0
  specs = experiment.task_specs(experiment.get_tasks(experiment.GLUE_TASKS))
  report = experiment.parameter_report(camtl.CAMTL(experiment.encoder_shape(config),
                                                   camtl.CAMTLConfig(), specs))
  assert report["plain_encoder"] == params


def test_encoder_shape_from_config_dir_and_errors(minilm_path):
  c = tiny.get_config()
  encoder = experiment.encoder_shape(c)  # "minilm": the package's config.json, no weights read
  assert (encoder.num_layers, encoder.hidden_size) == (2, 384)  # tiny keeps 2 of 6 layers
  c.unlock()
  c.model_path = "/nonexistent/model"
  with pytest.raises(ValueError, match="neither a local model directory"):
    experiment.encoder_shape(c)


def test_mtl24_large_step_builds_from_shapes_without_data():
  c = mtl24_large.get_config()
  mesh = sharding.make_mesh(1, jax.devices()[:1])
  setup = train.build_step(c, mesh)
  assert setup.candidates["input_ids"].shape == (24, 64, 2, 384)  # COPA has two choices: K=2
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(setup.abstract["params"]))
  assert 335_141_888 < n < 1.5 * 335_141_888  # + conditional modules (skip adapters: 1.3x)
  assert setup.abstract["params"]["encoder"]["layer_0"]["attention"]["query"]["kernel"].dtype == (
      np.float32)  # params f32 even with bfloat16 compute
  assert setup.model.encoder.dtype == "bfloat16"
  assert setup.abstract["used"].shape == (24 * train.NOMINAL_ROWS_PER_TASK,)


def test_parse_topology():
  assert aot.parse_topology("v5e:16x16")[1]["hbm_bytes"] == 16 * 2 ** 30
  assert aot.parse_topology("v4:4x4x8")[1]["chip_config_name"] == "megacore"
  for bad in ("v5e", "v9:2x2", "v5e:4by4"):
    with pytest.raises(ValueError, match="topology"):
      aot.parse_topology(bad)


def _compile_cmd(tmp_path, *extra):
  return [sys.executable, "-m", "camtl_jax.cli.compile_tpu", "--config", "tiny", "--topology",
          "v5e:2x2", "--json", str(tmp_path / "aot.json"), *extra]


@pytest.mark.integration
@pytest.mark.skipif(HAVE_LIBTPU, reason="libtpu is installed: its absence cannot be tested")
def test_compile_tpu_without_libtpu_fails_clearly(tmp_path):
  proc = subprocess.run(_compile_cmd(tmp_path), cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert "libtpu is not installed" in proc.stderr and "[tpu]" in proc.stderr


@pytest.mark.integration
@pytest.mark.skipif(not (HAVE_LIBTPU or HAVE_LIBTPU_DIR),
                    reason="libtpu not installed (pip install -e \".[tpu]\", or pip install "
                    "--target DIR and CAMTL_LIBTPU_DIR=DIR): cannot compile for a TPU topology")
def test_compile_tpu_for_a_small_topology(tmp_path):
  env = dict(os.environ)
  env.pop("JAX_PLATFORMS", None)
  if HAVE_LIBTPU_DIR and not HAVE_LIBTPU:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(LIBTPU_DIR).resolve()),
                                                    env.get("PYTHONPATH", "")) if p)
  proc = subprocess.run(_compile_cmd(tmp_path), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)
  if proc.returncode == 2 and "cannot describe topology" in proc.stderr:
    pytest.skip(proc.stderr.strip().splitlines()[-1])
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads((tmp_path / "aot.json").read_text())
  assert report["chips"] == 4 and report["device_kind"].startswith("TPU v5")
  assert report["mesh"] == {"data": 4, "model": 1}
  memory = report["memory_per_chip"]
  assert memory["arguments"] > 0 and memory["total"] > 0 and report["fits"]
  assert report["cost_per_chip"]["flops"] > 0 and report["roofline_seconds"] > 0
  assert report["cost_model_seconds"] > 0  # unmodelled ops added back (-1 s each)
  assert report["candidates"] == [5, 8, 2, 32]
  assert "memory per chip" in proc.stdout


def test_fsdp_splits_large_leaves_but_keeps_embedding_tables_replicated():
  # The sharding of the real mtl24_large state on a 256-way data axis, from shapes alone. A gather
  # from an embedding table split along its hidden axis made XLA materialise the whole [tokens, d]
  # activation on every chip (17 GiB on v5e 16x16): tables stay replicated (sharding.py).
  c = mtl24_large.get_config()
  setup = train.build_step(c, sharding.make_mesh(1, jax.devices()[:1]))
  flat = jax.tree_util.tree_flatten_with_path(
      {"params": setup.abstract["params"], "opt_state": setup.abstract["opt_state"]})[0]
  specs = {jax.tree_util.keystr(path): sharding.param_spec(path, x.shape, 256, fsdp=True)
           for path, x in flat}
  tables = [k for k in specs if "['embeddings']" in k]
  assert any("word_embeddings" in k for k in tables)
  assert all(specs[k] == jax.sharding.PartitionSpec() for k in tables)
  kernels = [k for k in specs if "['layer_23']['intermediate']['kernel']" in k]
  assert len(kernels) == 3  # the parameter and its two Adam moments
  assert all("data" in specs[k] for k in kernels)

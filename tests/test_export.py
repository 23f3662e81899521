"""camtl-export: per-task artifacts equal the multi-task model for every demo head type, and run
in a Python that cannot import camtl_jax (nor flax)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from camtl_jax import export, predict, workdir as workdir_lib
from camtl_jax.cli import export as cli_export
from camtl_jax.tasks import registry
from camtl_jax.configs import demo as demo_config
from tests.conftest import trained_tiny_workdir as tiny_workdir

# Per-task artifacts of a micro run trained by camtl-train, run in a Python that cannot import
# camtl_jax (and in a fresh venv): processes, so integration. The folds are the same code at any
# size; the micro model keeps the programs small. The mixed-task artifact's equality runs in
# process in tests/test_multitask_export.py.
pytestmark = pytest.mark.integration

TOLERANCE = 1e-5  # max abs difference, float32

# Run with `python -I` (no PYTHONPATH, no user site, no script directory on sys.path) from a temp
# dir; camtl_jax is pip-installed editable in the venv, so a meta path finder refuses it (and flax).
ISOLATED_RUNNER = textwrap.dedent("""
    import importlib.abc, json, runpy, sys
    import numpy as np

    class Refuse(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("camtl_jax", "flax", "configs"):
          raise ModuleNotFoundError(f"{name} is blocked in this test")
        return None

    sys.meta_path.insert(0, Refuse())
    for name in ("camtl_jax", "flax"):
      try:
        __import__(name)
      except ModuleNotFoundError:
        pass
      else:
        raise SystemExit(f"{name} is importable")
    jobs = json.loads(sys.argv[1])
    for artifact, inputs, outputs in jobs:
      model = runpy.run_path(f"{artifact}/load_and_run.py")["load"](artifact)
      with np.load(inputs) as data:
        out = model(**{k: data[k] for k in data.files})
      np.savez(outputs, **out)
    assert not [m for m in sys.modules if m.split(".")[0] in ("camtl_jax", "flax")]
    print("ran", len(jobs), "artifacts")
""")


def multitask_outputs(trained, task_id, inputs):
  """The multi-task model's outputs for the task on export inputs, in the artifact's layout
  (export.OUTPUT_KEYS' names, cropped to the task's classes / choices / tags)."""
  import jax
  spec = trained.model.tasks[task_id]
  out = jax.device_get(trained.apply(trained.params,
                                     export.multitask_batch(trained, task_id, inputs)))
  crop = spec.num_labels if spec.type in ("classification", "multiple_choice", "tagging") else None
  return {name: np.asarray(out[key])[..., :crop]
          for name, key in export.OUTPUT_KEYS[spec.type].items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return workdir_lib.load(tiny_workdir(tmp_path_factory, "all5_micro", config="micro"))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  """Every demo task exported; inputs (a dev batch) and the multi-task model's outputs saved."""
  root = tmp_path_factory.mktemp("exports")
  jobs, expected = [], {}
  for name in demo_config.DEMO_TASKS:
    task_id = trained.task_id(name)
    safe = name.replace("/", "_")
    result = export.export_task(trained, name, root / safe)
    examples = registry.load_split(trained.tasks[task_id], trained.workdir / "demo_data", "dev")
    inputs = export.sample_inputs(trained, task_id, examples[:48])
    np.savez(root / f"{safe}.inputs.npz", **inputs)
    jobs.append((str(result.out_dir), str(root / f"{safe}.inputs.npz"),
                 str(root / f"{safe}.outputs.npz")))
    expected[name] = (result, multitask_outputs(trained, task_id, inputs))
  proc = subprocess.run([sys.executable, "-I", "-c", ISOLATED_RUNNER, json.dumps(jobs)],
                        cwd=root, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert f"ran {len(jobs)} artifacts" in proc.stdout
  outputs = {name: dict(np.load(job[2])) for name, job in zip(demo_config.DEMO_TASKS, jobs)}
  return expected, outputs


@pytest.mark.parametrize("task_name", demo_config.DEMO_TASKS)
def test_artifact_equals_the_multitask_model(exported, task_name):
  expected, outputs = exported
  result, reference = expected[task_name]
  got = outputs[task_name]
  assert set(got) == set(reference)
  diffs = {k: float(np.max(np.abs(got[k] - reference[k]))) for k in reference}
  print(f"{task_name}: max abs diff {diffs}; parameters {result.parameters:,} vs multi-task "
        f"{result.multitask_parameters:,}")
  assert max(diffs.values()) <= TOLERANCE, diffs
  assert result.parameters < result.multitask_parameters


def test_artifact_files_and_meta(exported, trained):
  expected, _ = exported
  result, _ = expected["demo/similarity"]
  names = {p.name for p in result.out_dir.iterdir()}
  assert {"model.stablehlo", "weights.npz", "meta.json", "load_and_run.py", "tokenizer"} <= names
  assert (result.out_dir / "tokenizer" / "tokenizer.json").exists()
  meta = json.loads((result.out_dir / "meta.json").read_text())
  mean, std = trained.stats[trained.task_id("demo/similarity")]
  assert meta["type"] == "regression" and meta["target_mean"] == mean and meta["target_std"] == std
  assert meta["max_length"] == 32 and meta["outputs"] == ["value", "log_var"]
  source = (result.out_dir / "load_and_run.py").read_text()
  assert "camtl_jax" not in source and "flax" not in source


def test_symbolic_batch_and_length(exported, trained):
  """One artifact serves any batch size and any length up to max_length."""
  expected, _ = exported
  result, _ = expected["demo/sentiment"]
  model = __import__("runpy").run_path(str(result.out_dir / "load_and_run.py"))["load"](
      result.out_dir)
  task_id = trained.task_id("demo/sentiment")
  for batch, length in ((1, 5), (3, 32)):
    ids = np.full((batch, length), 1000, np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    inputs = {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
              "attention_mask": np.ones_like(ids)}
    got = model.predict(**inputs)
    want = multitask_outputs(trained, task_id, inputs)["logits"]
    assert got["logits"].shape == (batch, 2)
    np.testing.assert_allclose(got["logits"], want, atol=TOLERANCE)
    assert got["probabilities"].shape == (batch, 2)
  with pytest.raises(ValueError, match="exceeds max_length 32"):
    model(input_ids=np.ones((1, 33), np.int32), token_type_ids=np.zeros((1, 33), np.int32),
          attention_mask=np.ones((1, 33), np.int32))


def test_cli_reports_parameters_and_latency(trained, tmp_path, capsys):
  code = cli_export.main(["--workdir", str(trained.workdir), "--task", "demo/choice",
                      str(tmp_path / "choice"), "--benchmark"])
  out = capsys.readouterr().out
  print(out)
  assert code == 0 and "parameters:" in out and "latency per example" in out
  assert cli_export.main(["--workdir", str(trained.workdir), "--task", "glue/rte",
                      str(tmp_path / "x")]) == 2
  assert "unknown task 'glue/rte'" in capsys.readouterr().err


@pytest.mark.parametrize("variant", [{}, {"adapter": "skip"}, {"alignment": "film"},
                                     {"alignment": "none", "cond_attention": False}])
def test_folding_is_exact_for_model_variants(trained, variant):
  """The folds on non-trivial conditioning (every conditional parameter perturbed) and on the
  other component switches, traced in process (no serialization)."""
  import dataclasses
  import functools
  import jax
  from camtl_jax.models import camtl as camtl_lib
  rng = np.random.default_rng(0)
  params = {k: v if k in ("encoder", "heads") else jax.tree.map(
      lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32), v)
      for k, v in trained.params.items()}
  model = camtl_lib.CAMTL(trained.model.encoder, trained.model.config.replace(**variant),
                          trained.model.tasks)
  variant_model = dataclasses.replace(trained, model=model, params=params)
  for name in ("demo/entities", "demo/choice"):
    task_id = variant_model.task_id(name)
    examples = registry.load_split(variant_model.tasks[task_id], trained.workdir / "demo_data",
                                   "dev")
    inputs = export.sample_inputs(variant_model, task_id, examples[:16])
    weights = export.fold(variant_model, task_id)
    spec = model.tasks[task_id]
    got = jax.jit(functools.partial(export.forward, model.encoder, model.config, spec.type))(
        weights, *[inputs[k] for k in export.INPUTS[spec.type]])
    want = multitask_outputs(variant_model, task_id, inputs)
    for key in want:
      assert float(np.max(np.abs(np.asarray(got[key]) - want[key]))) <= TOLERANCE, (name, key)


def _installed_version(name: str) -> str:
  from importlib import metadata
  return metadata.version(name)


@pytest.mark.integration
def test_artifact_text_runs_in_a_fresh_venv_with_only_the_listed_packages(exported, trained,
                                                                            tmp_path):
  """load_and_run.py --text in a new virtualenv holding exactly what the artifact's README lists
  (jax, numpy, flatbuffers, tokenizers; pinned to this environment's versions), and its label
  equals camtl-predict's."""
  expected, _ = exported
  artifact = expected["demo/sentiment"][0].out_dir
  readme = (artifact / "README.md").read_text()
  packages = export.ARTIFACT_REQUIREMENTS + export.TEXT_REQUIREMENTS
  assert all(p in readme for p in packages)
  venv = tmp_path / "fresh"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
  pins = [f"{p}=={_installed_version(p)}" for p in packages + ("jaxlib",)]
  pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pins], capture_output=True,
                       text=True, timeout=900)
  assert pip.returncode == 0, pip.stderr[-3000:]
  text = "What a wonderful film."
  proc = subprocess.run([str(venv / "bin" / "python"), "load_and_run.py", "--text", text],
                        cwd=artifact, capture_output=True, text=True, timeout=300,
                        env={"PATH": os.environ.get("PATH", ""), "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  label = json.loads(proc.stdout.splitlines()[-1])["label"]
  task = trained.tasks[trained.task_id("demo/sentiment")]
  record = predict.predict(trained, task.name, [predict.text_example(task, text)])[0]
  assert label == record["label"]
  empty = subprocess.run([str(venv / "bin" / "python"), "load_and_run.py", "--text", " "],
                         cwd=artifact, capture_output=True, text=True, timeout=300,
                         env={"PATH": os.environ.get("PATH", ""), "JAX_PLATFORMS": "cpu"})
  assert empty.returncode == 2 and "non-empty text" in empty.stderr

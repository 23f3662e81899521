"""camtl-bench (bench.py): synthetic candidates are valid batches; the command runs on the micro
config (b = 8) and writes a complete JSON report."""
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from camtl_jax import experiment, train
from camtl_jax.perf import bench
from camtl_jax.models import camtl
from camtl_jax.configs import tiny

REPO = Path(__file__).resolve().parents[1]


def test_synthetic_candidates_are_valid_batches_of_every_head_type():
  # all five head types, K=2
  specs = experiment.task_specs(experiment.get_tasks(tiny.get_config().tasks))
  assert {s.type for s in specs} == {"classification", "regression", "tagging", "multiple_choice",
                                     "span"}
  cands = bench.synthetic_candidates(specs, batch_size=4, length=16, vocab_size=100)
  shapes = train.candidate_shapes(specs, 4, 16)
  assert {k: v.shape for k, v in cands.items()} == {k: v.shape for k, v in shapes.items()}
  assert cands["input_ids"].shape == (len(specs), 4, 2, 16)
  camtl.validate_candidates(cands, specs)  # labels, spans, tags, choices all in range
  np.testing.assert_array_equal(cands["task_id"][:, 0], np.arange(len(specs)))


def test_variants_change_only_what_they_name():
  c = tiny.get_config()
  plain, ca, mtu = (bench.STEP_VARIANTS[v](c) for v in ("plain", "camtl", "camtl_mtu"))
  assert (plain.model.conditioning, ca.model.conditioning, mtu.model.conditioning) == (
      "none", "camtl", "camtl")
  assert (plain.sampler, ca.sampler, mtu.sampler) == ("proportional", "proportional",
                                                      "mt_uncertainty")
  every = bench.STEP_VARIANTS["camtl_all_trainable"](c)
  assert tuple(every.frozen_layers) == (0, 0) and not every.freeze_embeddings
  assert tuple(c.frozen_layers) == (-1, -1) and c.sampler == "mt_uncertainty"  # not mutated


@pytest.mark.integration
def test_bench_command_writes_complete_json_with_the_hf_reference(tmp_path):
  """Every program of bench.ORDER, and HF's BertForSequenceClassification of the same shape
  (hf_forward, hf_train) in a resident process called in the same rounds, with the ratios
  against our programs: one command, so the programs compile once."""
  out = tmp_path / "bench.json"
  proc = subprocess.run(
      [sys.executable, "-m", "camtl_jax.cli.bench", "--config", "micro", "--steps", "2",
       "--matmul_size", "256", "--json", str(out), "--config.batch_size=8",
       "--variants", ",".join(bench.ORDER + bench.OPTIONAL)],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "target conditional_overhead" in proc.stdout and "(PyTorch, HF)" in proc.stdout
  report = json.loads(out.read_text())
  assert report["matmul"]["flops_per_s"] > 0
  assert set(report["variants"]) == set(bench.ORDER + bench.OPTIONAL)
  for name in bench.ORDER:
    row = report["variants"][name]
    for key in ("seconds_per_step", "examples_per_s", "compile_seconds", "flops_per_step",
                "flops_per_s", "peak_fraction", "cpu_seconds_per_step"):
      assert row[key] > 0, (name, key, row[key])
    assert row["memory_per_device"]["arguments"] > 0, name
    assert row["rss_peak_bytes"] > 0, name
  for name in bench.OPTIONAL:
    row = report["variants"][name]
    assert len(row["step_seconds"]) == 2 and row["examples_per_s"] > 0
    target = report["targets"][f"{name}_over_ours"]
    assert target["value"] > 0 and target["per_round_min"] <= target["per_round_max"]
  c = report["config"]
  assert (c["T"], c["b"], c["K"], c["L"]) == (5, 8, 2, 32)
  # The scoring forward and the T*b-example forwards run T*b examples; the steps b.
  assert report["variants"]["score"]["examples"] == 5 * 8
  assert report["variants"]["camtl_mtu"]["examples"] == 8
  # MT-U = scoring forward + the update of the baseline-sampled step, in FLOPs.
  v = report["variants"]
  assert v["camtl_mtu"]["flops_per_step"] > v["camtl"]["flops_per_step"] + 0.9 * v["score"][
      "flops_per_step"]
  # Frozen layers cost no weight-gradient FLOPs: the compiled camtl step (layer 0 and the
  # embeddings frozen) does at least 95% of those matmuls fewer than camtl_all_trainable.
  fe = report["frozen_effect"]
  assert fe["flops_saved"] >= 0.95 * fe["expected_weight_grad_flops"] > 0
  assert set(report["targets"]) >= {"conditional_overhead", "conditional_overhead_all_trainable",
                                    "score_vs_plain_forward", "camtl_mtu_peak_fraction"}


@pytest.mark.research  # a measurement on the real GLUE candidates (packing's padding saved)
def test_glue5_bench_on_real_candidates_reports_packing(shared_data, minilm_path, tmp_path):
  """bench:glue5 times the MT-U step on real GLUE candidate sets: packed has less padding than
  padded_128, one program each, and the report holds what the speed issue asks for."""
  out = tmp_path / "glue5.json"
  proc = subprocess.run(
      [sys.executable, "-m", "camtl_jax.cli.bench", "--config", "bench:glue5", "--steps", "2",
       "--matmul_size", "256", "--json", str(out), f"--config.data_dir={shared_data}",
       "--config.encoder_layers=1", "--config.batch_size=4",
       f"--config.cache_dir={tmp_path / 'cache'}", "--profile", str(tmp_path / "trace")],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  rows = report["variants"]
  assert set(rows) == {"packed", "padded_128", "bucketed"}
  # --profile: the packed step's thunk time split by part, the scoring forward's matmuls counted.
  profile = report["profile"]
  assert {"scoring forward", "update forward", "update backward"} <= set(profile["parts"])
  assert abs(sum(p["share"] for p in profile["parts"].values()) - 1.0) < 1e-6
  assert profile["parts"]["scoring forward"]["dot_flops"] > 0
  assert list((tmp_path / "trace").glob("**/perfetto_trace.json.gz"))
  assert "scoring forward" in proc.stdout
  for row in rows.values():
    assert {"seconds_per_step", "examples_per_s", "padding_fraction", "programs_compiled",
            "compile_seconds", "peak_fraction"} <= set(row)
  assert rows["packed"]["padding_fraction"] < rows["padded_128"]["padding_fraction"]
  assert rows["packed"]["programs_compiled"] == rows["padded_128"]["programs_compiled"] == 1
  assert report["config"]["packed_rows_per_step"] < report["config"]["candidate_rows_per_step"]
  assert "packed / padded_128" in proc.stdout


def test_glue5_base_runs_the_bert_base_shape_on_the_same_candidates():
  """bench:glue5-base: the real-data bench at BERT-base's shape, random weights whose tree the
  model accepts, the tasks and tokenizer of glue5 (MiniLM's vocabulary fits BERT's)."""
  from camtl_jax.perf import bench_real  # pylint: disable=import-outside-toplevel
  from camtl_jax.configs import bench as bench_configs  # pylint: disable=import-outside-toplevel
  config = bench_configs.get_config("glue5-base")
  config.encoder_layers = 2
  tasks = experiment.get_tasks(config.tasks)
  run = experiment.Run(config, Path("/unused"), tasks, [], [], model=None, pretrained=None,
                       mesh=None, loader=None)
  run = bench_real.with_random_encoder(run, config.bench_encoder)
  encoder = run.model.encoder
  assert (encoder.hidden_size, encoder.num_layers, encoder.vocab_size) == (768, 2, 30522)
  assert config.model_path == "minilm" and [t.name for t in run.model.tasks] == list(config.tasks)
  params = camtl.init_params(run.model, jax.random.key(0), run.pretrained,
                             camtl.example_batch(run.model.tasks))
  assert params["encoder"]["layer_1"]["output"]["kernel"].shape == (3072, 768)

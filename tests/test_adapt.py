"""camtl-adapt: adding a held-out demo task to a trained model, '--train new' leaving every old
task bit-identical, the learning curve, zero-shot and bad input (on the micro model); learning the
new task (research, on six real MiniLM layers)."""
import json

import numpy as np
import pytest
from flax import traverse_util

from camtl_jax import adapt, evaluate, predict, workdir as workdir_lib
from camtl_jax.cli import adapt as cli_adapt
from camtl_jax.cli import predict as cli_predict
from camtl_jax.tasks import registry, spec
from tests.conftest import trained_micro_workdir, trained_tiny_workdir as tiny_workdir

HELD_OUT = "demo/sentiment"
OLD_TASKS = ("demo/similarity", "demo/entities", "demo/choice", "demo/span")


# All six MiniLM layers: below its top layers MiniLM's [CLS] is the same vector for every sentence
# (std across sentences 8e-4 after 2 layers, 0.18 after 6), so '--train new', a linear probe of the
# pooled [CLS] plus one embedding row, has nothing to read from a truncated encoder.
BASE_LAYERS = "--config.encoder_layers=6"


@pytest.fixture(scope="module")
def base_workdir(tmp_path_factory):
  """The micro run on every demo task but the held-out one."""
  return trained_micro_workdir(tmp_path_factory, "micro_heldout", tasks=OLD_TASKS)


@pytest.fixture(scope="module")
def real_base_workdir(tmp_path_factory):
  """The tiny run (six real MiniLM layers) on every demo task but the held-out one."""
  return tiny_workdir(tmp_path_factory, "heldout", BASE_LAYERS,
                      "--config.tasks=" + repr(OLD_TASKS))


def _adapt_new(base_workdir, out, steps: int):
  code = cli_adapt.main(["--workdir", str(base_workdir), "--new-task", HELD_OUT, "--data-dir",
                         str(base_workdir / "demo_data"), "--fraction", "0.1", "--train", "new",
                         "--steps", str(steps), "--out", str(out)])
  assert code == 0
  return out


@pytest.fixture(scope="module")
def adapted_new(base_workdir, tmp_path_factory):
  return _adapt_new(base_workdir, tmp_path_factory.mktemp("adapted") / "new", steps=4)


@pytest.fixture(scope="module")
def real_adapted_new(real_base_workdir, tmp_path_factory):
  return _adapt_new(real_base_workdir, tmp_path_factory.mktemp("adapted") / "real", steps=80)


def test_adapted_workdir_is_a_workdir(adapted_new, base_workdir):
  trained = workdir_lib.load(adapted_new)
  assert [t.name for t in trained.tasks] == list(OLD_TASKS) + [HELD_OUT]
  info = json.loads((adapted_new / "adapt.json").read_text())
  assert info["num_train"] == 200 and info["train"] == "new" and info["new_task"] == HELD_OUT
  assert info["learning_rate"] == adapt.DEFAULT_LR["new"]
  rec = predict.predict(trained, HELD_OUT, [predict.text_example(trained.tasks[-1], "a good film")])
  assert rec[0]["label"] in ("0", "1")


def test_train_new_leaves_shared_params_and_old_rows_bit_identical(base_workdir, adapted_new):
  before = traverse_util.flatten_dict(workdir_lib.load(base_workdir).params)
  after = traverse_util.flatten_dict(workdir_lib.load(adapted_new).params)
  for path, old in before.items():
    new = after[path]
    if new.shape != old.shape:  # the embedding: one row added, the old rows unchanged
      assert adapt.stacked(path) and new.shape[0] == old.shape[0] + 1, path
      new = new[tuple(slice(0, n) for n in old.shape)]
    np.testing.assert_array_equal(new, old, err_msg="/".join(path))
  embedding = after[("task_embedding", "embedding")]
  mean_row = before[("task_embedding", "embedding")].mean(0)
  assert np.any(embedding[-1] != mean_row)  # the new row did train
  new_head = [p for p in after if p[:2] == ("heads", "classification")]
  assert new_head and all(p not in before for p in new_head)  # a fresh head type


def test_train_new_old_tasks_dev_predictions_unchanged(base_workdir, adapted_new):
  before, after = workdir_lib.load(base_workdir), workdir_lib.load(adapted_new)
  for name in OLD_TASKS:
    task_id = before.task_id(name)
    assert after.task_id(name) == task_id
    examples = registry.load_split(before.tasks[task_id], base_workdir / "demo_data", "dev")[:48]
    split = before.encode(task_id, examples)
    rows_b, out_b = evaluate.forward_split(before.apply, before.params, split, task_id,
                                           before.eval_setup())
    rows_a, out_a = evaluate.forward_split(after.apply, after.params, split, task_id,
                                           after.eval_setup())
    for a, b in zip(out_a, out_b):
      for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
    assert (evaluate.predictions(split, rows_b, out_b)
            == evaluate.predictions(split, rows_a, out_a))


@pytest.mark.research
def test_train_new_learns_the_new_task(real_adapted_new, real_base_workdir):
  """Only the new embedding row and head row moved, and the held-out task is learned."""
  trained = workdir_lib.load(real_adapted_new)
  dev = registry.load_split(trained.tasks[-1], real_base_workdir / "demo_data", "dev")
  majority = max(np.mean([ex.label == label for ex in dev]) for label in ("0", "1"))
  accuracy = json.loads((real_adapted_new / "adapt.json").read_text())["results"]["accuracy"]
  print(f"--train new, 200 examples, 80 steps: accuracy {accuracy:.3f} (majority {majority:.3f})")
  assert accuracy > majority + 0.25


def _learning_curve(base_workdir, out, steps: int, learning_rate: str):
  code = cli_adapt.main(["--workdir", str(base_workdir), "--new-task", HELD_OUT, "--data-dir",
                         str(base_workdir / "demo_data"), "--train", "all", "--steps", str(steps),
                         "--learning-rate", learning_rate,
                         "--fractions", "0.01,0.1", "--seeds", "0,1", "--out", str(out)])
  assert code == 0
  lines = (out / "learning_curve.csv").read_text().splitlines()
  md = (out / "learning_curve.md").read_text()
  return lines, md


def test_learning_curve_files(base_workdir, tmp_path):
  lines, md = _learning_curve(base_workdir, tmp_path / "curve", steps=2, learning_rate="1e-3")
  assert lines[0].startswith("fraction,num_train,seed,steps,score") and len(lines) == 1 + 4
  assert ((tmp_path / "curve") / "learning_curve.png").stat().st_size > 1000
  assert "| 0.1 | 200 | 2 |" in md and "majority class" in md


@pytest.mark.research
def test_new_task_learns_and_learning_curve(real_base_workdir, tmp_path):
  lines, md = _learning_curve(real_base_workdir, tmp_path / "curve", steps=80, learning_rate="1e-3")
  rows = [line.split(",") for line in lines[1:]]
  majority = float(md.split("| majority class | - | - | ")[1].split(" ")[0])
  at_tenth = [float(r[4]) for r in rows if r[0] == "0.1"]
  assert min(at_tenth) > majority + 0.25, (at_tenth, majority)  # clearly beats chance


def test_zero_shot_through_an_existing_head(micro_workdir, tmp_path):
  """A new classification task over the same sentences, read through demo/sentiment's head with
  its labels swapped: its accuracy is exactly 1 - demo/sentiment's on the same examples."""
  trained = workdir_lib.load(micro_workdir)
  sentiment = registry.get_task("demo/sentiment")
  data = trained.workdir / "demo_data"
  flipped_spec = tmp_path / "flipped.json"
  flipped_spec.write_text(json.dumps({"tasks": [{
      "name": "test/flipped_sentiment", "type": "classification", "text_fields": ["sentence"],
      "labels": ["0", "1"], "files": {s: sentiment.splits[s] for s in ("train", "dev")}}]}))
  [flipped] = spec.load_spec(flipped_spec, data_dir=str(data))
  dev = registry.load_split(flipped, data, "dev")
  results = adapt.zero_shot(trained, flipped, dev, "demo/sentiment", {"0": "1", "1": "0"})
  records = predict.predict(trained, "demo/sentiment", registry.load_split(sentiment, data, "dev"))
  direct = np.mean([r["label"] == ex.label for r, ex in zip(
      records, registry.load_split(sentiment, data, "dev"))])
  assert results["accuracy"] == pytest.approx(1 - direct)
  with pytest.raises(ValueError, match=r"unmapped \['1'\]"):
    adapt.zero_shot(trained, flipped, dev, "demo/sentiment", {"0": "1"})
  with pytest.raises(ValueError, match=r"not: \['neutral'\]"):
    adapt.zero_shot(trained, flipped, dev, "demo/sentiment", {"0": "1", "1": "neutral"})
  with pytest.raises(ValueError, match="two classification tasks"):
    adapt.zero_shot(trained, flipped, dev, "demo/choice", {"0": "1", "1": "0"})


def test_bad_input_gives_clear_errors(base_workdir, tmp_path, capsys):
  def run(*args):
    code = cli_adapt.main(["--workdir", str(base_workdir),
                           "--data", str(base_workdir / "demo_data"),
                           "--out", str(tmp_path / "o"), *args])
    return code, capsys.readouterr().err
  code, err = run("--new-task", "demo/sentimnt")
  assert code == 2 and "unknown task 'demo/sentimnt'; did you mean ['demo/sentiment'" in err
  code, err = run("--new-task", "demo/choice")
  assert code == 2 and "already has task 'demo/choice'" in err
  code, err = run("--new-task", HELD_OUT, "--init-from", "glue/rte")
  assert code == 2 and "unknown task 'glue/rte'" in err
  code, err = run("--new-task", HELD_OUT, "--zero-shot-from", "demo/choice")
  assert code == 2 and "--label-map" in err
  empty = tmp_path / "empty"
  empty.mkdir()
  assert cli_adapt.main(["--workdir", str(empty), "--new-task", HELD_OUT, "--data", "x", "--out",
                     str(tmp_path / "o")]) == 2
  assert "holds no checkpoint" in capsys.readouterr().err
  with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
    adapt.subset([1, 2, 3], 0.0, 0)
  with pytest.raises(ValueError, match="source=target"):
    adapt.parse_label_map("entailment:entailment")
  assert adapt.subset(list(range(100)), 0.05, 3) == adapt.subset(list(range(100)), 0.05, 3)
  assert adapt.subset(list(range(100)), 0.05, 3) != adapt.subset(list(range(100)), 0.05, 4)


# ------------------------------------------------------------------------------------------------
# Real data: superglue/rte + glue/mrpc -> superglue/cb with '--train new' (about 3.5 minutes on 2
# CPU cores). Measured (seed 0, 100 steps of 8): accuracy 0.643 at 10% (25 examples) and 0.714 at
# 100% (250) with --learning-rate 3e-2; 0.536 / 0.732 at the default 1e-2; majority class 0.500.

REAL_BASE = ("--config.tasks=('superglue/rte', 'glue/mrpc')", BASE_LAYERS,
             "--config.max_length=64", "--config.bucket_step=32", "--config.batch_size=8",
             "--config.total_steps=100", "--config.eval_every=100", "--config.checkpoint_every=100",
             "--config.log_every=100", "--config.max_eval_examples=128",
             "--config.learning_rate=1e-4")


@pytest.mark.research
def test_real_rte_model_adapted_to_cb_with_new_rows_only_beats_majority_class(
    shared_data, minilm_path, tmp_path_factory, tmp_path, capsys):
  base = tiny_workdir(tmp_path_factory, "rte_mrpc", *REAL_BASE, f"--config.data_dir={shared_data}")
  out = tmp_path / "cb_curve"
  code = cli_adapt.main(["--workdir", str(base), "--new-task", "superglue/cb", "--data",
                     str(shared_data), "--train", "new", "--steps", "100", "--batch-size", "8",
                     "--learning-rate", "3e-2", "--fractions", "0.1,1.0", "--seeds", "0",
                     "--zero-shot-from", "superglue/rte",
                     "--label-map", "entailment=entailment,not_entailment=contradiction",
                     "--out", str(out)])
  assert code == 0
  print(capsys.readouterr().out)
  lines = (out / "learning_curve.csv").read_text().splitlines()
  header = lines[0].split(",")
  runs = [dict(zip(header, line.split(","))) for line in lines[1:]]
  dev = registry.load_split(registry.get_task("superglue/cb"), shared_data, "val")
  majority = max(np.mean([ex.label == label for ex in dev]) for label in {ex.label for ex in dev})
  for run in runs:
    print(f"superglue/cb fraction {run['fraction']} ({run['num_train']} examples): accuracy "
          f"{float(run['accuracy']):.4f}, macro_f1 {float(run['macro_f1']):.4f}; majority class "
          f"accuracy {majority:.4f}")
    assert float(run["accuracy"]) > majority + 0.08, run


@pytest.mark.integration
def test_submission_files_of_the_real_base(shared_data, tmp_path_factory, tmp_path):
  """camtl-predict --submission: the leaderboard files of the model's GLUE / SuperGLUE tasks,
  predicted on their (unlabelled) test splits. A 2-step micro model trained on the real files:
  the files' format is the check."""
  base = tiny_workdir(tmp_path_factory, "rte_mrpc_2_steps", REAL_BASE[0], *REAL_BASE[2:],
                      f"--config.data_dir={shared_data}", "--config.total_steps=2",
                      "--config.eval_every=2", "--config.checkpoint_every=2", config="micro")
  out = tmp_path / "submission"
  assert cli_predict.main(["--workdir", str(base), "--submission", str(out), "--data",
                           str(shared_data), "--max-examples", "20"]) == 0
  rte = [json.loads(line) for line in (out / "RTE.jsonl").read_text().splitlines()]
  assert len(rte) == 20 and {r["label"] for r in rte} <= {"entailment", "not_entailment"}
  assert sorted(r["idx"] for r in rte) == list(range(20))
  mrpc = (out / "MRPC.tsv").read_text().splitlines()
  assert mrpc[0] == "index\tprediction" and len(mrpc) == 21
  assert {line.split("\t")[1] for line in mrpc[1:]} <= {"0", "1"}

"""camtl-predict on a trained micro workdir (conftest.micro_workdir): equal to the evaluation
step, every head type, bad input."""
import functools
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from camtl_jax import evaluate, experiment, predict, train, workdir as workdir_lib
from camtl_jax.cli import predict as cli_predict
from camtl_jax.tasks import base, registry
from camtl_jax.configs import demo as demo_config
from tests.conftest import micro_config

REPO = Path(__file__).resolve().parents[1]
DEMO_TASKS = demo_config.DEMO_TASKS


@pytest.fixture(scope="module")
def workdir(micro_workdir):
  return micro_workdir


@pytest.fixture(scope="module")
def trained(workdir):
  return workdir_lib.load(workdir)


def _dev_examples(workdir, task, n=64):
  return registry.load_split(task, workdir / "demo_data", "dev")[:n]


def test_workdir_holds_config_and_task_records(workdir, trained):
  config = json.loads((workdir / "config.json").read_text())
  assert config["tasks"] == list(micro_config().tasks)
  assert [t.name for t in trained.tasks] == list(DEMO_TASKS)
  results = json.loads((workdir / "results.json").read_text())
  assert trained.step == results["step"]  # the best-scored checkpoint is the one selected
  mean, std = trained.stats[trained.task_id("demo/similarity")]
  assert 0 < mean < 5 and std > 0


@pytest.fixture(scope="module")
def evaluation(workdir):
  """The training run's evaluation: its Run (dev splits) and jitted eval step."""
  import jax
  run = experiment.build_run(micro_config(), workdir)
  ctx = types.SimpleNamespace(model=run.model,  # chunked as in training (16 rows on CPU)
                              eval_chunk_rows=experiment.eval_chunk_rows(run.config))
  return run, jax.jit(functools.partial(train.eval_step, ctx), static_argnums=2)


def _eval_predictions(evaluation, trained, task_id, num_examples):
  """What the training run's evaluation predicts for the first dev examples (its eval step,
  batched over the run's mesh)."""
  run, p_eval = evaluation
  split = evaluate.capped(dict(run.dev_splits)[task_id], num_examples)
  setup = evaluate.eval_setup(run.config, run.model.tasks, run.mesh)
  return evaluate.predictions(split, *evaluate.forward_split(p_eval, trained.params, split,
                                                             task_id, setup))


@pytest.mark.parametrize("task_name", DEMO_TASKS)
def test_predictions_equal_the_evaluation_step(workdir, trained, evaluation, task_name):
  task_id = trained.task_id(task_name)
  task = trained.tasks[task_id]
  examples = _dev_examples(workdir, task)
  records = predict.predict(trained, task_name, examples)
  expected = _eval_predictions(evaluation, trained, task_id, len(examples))
  key = {base.CLASSIFICATION: "label", base.REGRESSION: "value", base.MULTIPLE_CHOICE: "choice",
         base.SPAN: "answer", base.TAGGING: "tags"}[task.type]
  got = [r[key] for r in records]
  if task.type == base.REGRESSION:
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  else:
    assert got == expected
  assert [r["id"] for r in records] == [ex.example_id if ex.example_id is not None else i
                                        for i, ex in enumerate(examples)]


def test_probabilities_are_distributions_matching_the_prediction(workdir, trained):
  for name in ("demo/sentiment", "demo/choice"):
    task = trained.tasks[trained.task_id(name)]
    for r in predict.predict(trained, name, _dev_examples(workdir, task, 16)):
      probs = r["probabilities"]
      values = list(probs.values()) if isinstance(probs, dict) else probs
      assert abs(sum(values) - 1) < 1e-5
      best = max(probs, key=probs.get) if isinstance(probs, dict) else int(np.argmax(probs))
      assert best == (r["label"] if "label" in r else r["choice"])
  tags = predict.predict(trained, "demo/entities", _dev_examples(workdir, registry.get_task(
      "demo/entities"), 4))
  assert all(len(r["tags"]) == len(r["words"]) == len(r["tag_probabilities"]) for r in tags)


def _cli(capsys, *args):
  code = cli_predict.main(list(args))
  out, err = capsys.readouterr()
  return code, [json.loads(line) for line in out.splitlines()], err


def test_cli_text(workdir, capsys):
  code, recs, err = _cli(capsys, "--workdir", str(workdir), "--task", "demo/sentiment", "--text",
                         "what a wonderful film !")
  assert code == 0 and recs[0]["label"] in ("0", "1")
  assert set(recs[0]["probabilities"]) == {"0", "1"}
  assert "1 predictions for demo/sentiment" in err and "0 truncated" in err


def test_text_examples_for_every_head_type(trained):
  def one(name, *args, **kwargs):
    task = trained.tasks[trained.task_id(name)]
    return predict.predict(trained, name, [predict.text_example(task, *args, **kwargs)])[0]
  rec = one("demo/similarity", "river stone bread", "river stone")
  assert isinstance(rec["value"], float) and rec["std"] > 0
  rec = one("demo/choice", "Tom was hungry. What happened as a result?",
            choices=["Tom ate.", "Tom slept."])
  assert rec["choice"] in (0, 1) and len(rec["probabilities"]) == 2
  rec = one("demo/span", "Where does Anna live?", "Anna lives in Paris.")
  assert rec["answer"] in "Anna lives in Paris." and rec["windows"] == 1
  rec = one("demo/entities", "Anna lives in New York .")
  assert rec["words"] == ["Anna", "lives", "in", "New", "York", "."] and len(rec["tags"]) == 6


def test_file_inputs_jsonl_tsv_and_task_format(workdir, trained, tmp_path, capsys):
  jsonl = tmp_path / "in.jsonl"
  jsonl.write_text('{"text": "a superb movie", "id": "a"}\n{"text": "a dull book", "id": "b"}\n')
  tsv = tmp_path / "in.tsv"
  tsv.write_text("text\na superb movie\na dull book\n")
  out = tmp_path / "out.jsonl"
  code, _, err = _cli(capsys, "--workdir", str(workdir), "--task", "demo/sentiment", "--input",
                      str(jsonl), "--output", str(out))
  assert code == 0 and "2 predictions" in err
  from_jsonl = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["id"] for r in from_jsonl] == ["a", "b"]
  sentiment = trained.tasks[trained.task_id("demo/sentiment")]
  from_tsv = predict.predict(trained, sentiment.name, predict.read_inputs(sentiment, tsv))
  assert [r["label"] for r in from_tsv] == [r["label"] for r in from_jsonl]
  # The task's own distribution format (here the SQuAD json of demo/span's dev split).
  span = registry.get_task("demo/span")
  examples = predict.read_inputs(span, workdir / "demo_data" / span.splits["dev"], "task")
  assert len(examples) == 200 and examples[0].question


def test_long_text_is_truncated_and_said_so_or_refused(trained, capsys, caplog):
  long_text = " ".join(["wonderful"] * 200)
  records = predict.predict(trained, "demo/sentiment",
                            [predict.text_example(trained.tasks[0], long_text),
                             predict.text_example(trained.tasks[0], "a good film")])
  assert [r["truncated"] for r in records] == [True, False]
  assert "1 of 2 examples longer than 32 tokens were truncated" in caplog.text
  with pytest.raises(ValueError, match="longer than the model's max_length 32"):
    predict.predict(trained, "demo/sentiment", [predict.text_example(trained.tasks[0], long_text)],
                    on_long="error")
  # Span tasks read long contexts in windows instead.
  span = trained.tasks[trained.task_id("demo/span")]
  context = " ".join(f"Person{i} works in Paris." for i in range(30)) + " Anna lives in Rome."
  rec = predict.predict(trained, "demo/span", [predict.text_example(
      span, "Where does Anna live?", context)], on_long="error")[0]
  assert rec["windows"] > 1 and not rec["truncated"]


def test_bad_input_gives_clear_errors(workdir, trained, tmp_path, capsys):
  with pytest.raises(ValueError, match=r"unknown task 'glue/rte'.*trained on \['demo/sentiment'"):
    trained.task_id("glue/rte")
  code, _, err = _cli(capsys, "--workdir", str(workdir), "--task", "glue/rte", "--text", "x")
  assert code == 2 and "unknown task 'glue/rte'" in err
  empty = tmp_path / "empty_workdir"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    workdir_lib.load(empty)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    workdir_lib.load(tmp_path / "missing")
  task = trained.tasks[0]
  tsv_as_jsonl = tmp_path / "rows.jsonl"
  tsv_as_jsonl.write_text("text\nsome film\n")
  with pytest.raises(base.DataError, match=r"rows.jsonl, line 1: invalid JSON"):
    predict.read_inputs(task, tsv_as_jsonl)
  wrong_field = tmp_path / "fields.jsonl"
  wrong_field.write_text('{"text": "ok"}\n{"sentence": "no text key"}\n')
  with pytest.raises(base.DataError, match=r"fields.jsonl, line 2, field 'text': missing field"):
    predict.read_inputs(task, wrong_field)
  ragged = tmp_path / "ragged.tsv"
  ragged.write_text("text\ta\nfine\n")
  with pytest.raises(base.DataError, match=r"ragged.tsv, line 2: 1 fields but the header"):
    predict.read_inputs(task, ragged)
  # Neither jsonl nor tsv: read in the task's own format, whose errors name file, line and field.
  with pytest.raises(base.DataError, match=r"x.csv, line 1, field 'sentence': missing column"):
    (tmp_path / "x.csv").write_text("a\n")
    predict.read_inputs(task, tmp_path / "x.csv")
  choice = trained.tasks[trained.task_id("demo/choice")]
  with pytest.raises(base.DataError, match="field 'choices'"):
    predict.text_example(choice, "premise only")


def test_predict_and_export_fall_back_from_a_damaged_best_checkpoint(workdir, tmp_path, capsys):
  from camtl_jax import checkpoint
  from camtl_jax.cli import export as cli_export
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  best, fallback = checkpoint.ranked_steps(copy)[:2]
  state = copy / "checkpoints" / str(best) / "state"
  for f in state.rglob("*"):  # every state file overwritten
    if f.is_file():
      f.write_text("garbage")
  before = sorted(str(p) for p in copy.rglob("*"))
  assert cli_predict.main(["--workdir", str(copy), "--task", "demo/sentiment", "--text",
                           "a fine film"]) == 0
  assert cli_export.main(["--workdir", str(copy), "--task", "demo/sentiment",
                          str(tmp_path / "artifact")]) == 0
  err = capsys.readouterr().err
  warning = (f"warning: checkpoint {best} ({state / '_METADATA'}: JSONDecodeError: Expecting "
             f"value: line 1 column 1 (char 0)) is damaged; using the next best, checkpoint "
             f"{fallback}")
  assert [line for line in err.splitlines() if line.startswith("warning:")] == [warning] * 2
  assert f"(step {fallback})" in err and "Traceback" not in err
  assert json.loads((tmp_path / "artifact" / "meta.json").read_text())["source"]["step"] == fallback
  assert sorted(str(p) for p in copy.rglob("*")) == before  # read-only: nothing moved

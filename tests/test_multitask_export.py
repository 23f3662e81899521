"""camtl-export --all-tasks on a trained micro workdir: one program for every task whose outputs on
a batch mixing all five demo tasks (every head type) equal the multi-task model's per example;
both kinds of artifact answer text in words, as camtl-predict does."""
import json
import runpy

import numpy as np
import pytest

from camtl_jax import export, multitask_export, predict, workdir as workdir_lib
from camtl_jax.cli import export as cli_export
from camtl_jax.models import camtl as camtl_lib
from camtl_jax.tasks import base, registry

TOLERANCE = 1e-5  # max abs difference, float32


@pytest.fixture(scope="module")
def trained(micro_workdir):
  return workdir_lib.load(micro_workdir)


@pytest.fixture(scope="module")
def artifact(trained, tmp_path_factory):
  out = tmp_path_factory.mktemp("all_tasks")
  result = multitask_export.export_all(trained, out)
  return result, runpy.run_path(str(out / export.LOADER))["load"](out)


def _model_outputs(trained, part, length):
  """The multi-task model's outputs for one task's examples, as its evaluation batches them
  ([B, K_max, L], every head type)."""
  n = part.size
  batch = camtl_lib.example_batch(trained.model.tasks, n, length)
  for key in camtl_lib.CHOICE_KEYS:
    x = part.arrays[key][..., :length]
    batch[key] = np.zeros_like(batch[key])
    batch[key][:, :x.shape[1] if x.ndim == 3 else 1] = x if x.ndim == 3 else x[:, None]
  if "context_mask" in part.arrays:
    batch["context_mask"] = part.arrays["context_mask"][:, :length]
  batch["task_id"] = np.full((n,), part.task_id, np.int32)
  return {k: np.asarray(v) for k, v in trained.apply(trained.params, batch).items()}


def test_mixed_batch_equals_the_multitask_model_per_example(trained, artifact):
  """Three dev examples of every demo task in one batch (in an interleaved order of tasks),
  through the deserialized program: every output key of every example equals the multi-task
  model's."""
  _, model = artifact
  parts = []
  for task_id in (2, 0, 4, 3, 1):  # tagging, classification, span, choice, regression
    task = trained.tasks[task_id]
    examples = registry.load_split(task, trained.workdir / "demo_data", "dev")[:3]
    parts.append(multitask_export.Part(task_id, trained.encode(task_id, examples).arrays))
  length = multitask_export.used_length(parts)
  inputs = multitask_export.mixed_inputs(parts, trained.num_choices, length)
  got = model(**inputs)
  assert set(got) == set(model.meta["outputs"])
  assert {trained.tasks[t].type for t in inputs["task_id"]} == set(base.TASK_TYPES)
  start = 0
  for part in parts:
    want = _model_outputs(trained, part, length)
    n = part.size
    for key in got:
      diff = float(np.max(np.abs(got[key][start:start + n] - want[key])))
      assert diff <= TOLERANCE, (trained.tasks[part.task_id].name, key, diff)
    start += n
  assert start == len(inputs["task_id"])


def test_symbolic_batch_rows_and_length(trained, artifact):
  """Any number of examples, rows and tokens up to max_length; padding examples and rows."""
  _, model = artifact
  task = trained.tasks[0]
  examples = registry.load_split(task, trained.workdir / "demo_data", "dev")[:2]
  part = multitask_export.Part(0, trained.encode(0, examples).arrays)
  alone = model(**multitask_export.mixed_inputs([part], trained.num_choices,
                                                multitask_export.used_length([part])))
  padded = model(**multitask_export.mixed_inputs([part], trained.num_choices, 32, 5, 7))
  assert padded["cls_logits"].shape[0] == 5
  np.testing.assert_allclose(padded["cls_logits"][:2], alone["cls_logits"], atol=TOLERANCE)
  with pytest.raises(ValueError, match="exceeds max_length 32"):
    model(**multitask_export.mixed_inputs([part], trained.num_choices, 33))


def test_readme_states_sizes_against_per_task_artifacts(trained, artifact):
  result, model = artifact
  readme = (result.out_dir / "README.md").read_text()
  assert set(result.per_task_bytes) == {t.name for t in trained.tasks}
  assert all(b > 0 for b in result.per_task_bytes.values())
  total = sum(result.per_task_bytes.values())
  assert f"{result.artifact_bytes / total:.2f}x" in readme
  for name in result.tasks:
    assert f"camtl-export --task {name}" in readme
  # One encoder instead of five: smaller than the per-task artifacts together.
  assert result.artifact_bytes < total
  meta = json.loads((result.out_dir / "meta.json").read_text())
  assert meta["kind"] == "multitask" and [t["name"] for t in meta["tasks"]] == result.tasks
  assert "camtl_jax" not in (result.out_dir / "load_and_run.py").read_text()


def _text_records(trained):
  """One camtl-predict input per demo task (fields as the --input jsonl takes them)."""
  return [
      {"task": "demo/sentiment", "text": "a wonderful film", "text_pair": "truly"},
      {"task": "demo/similarity", "text": "river stone bread", "text_pair": "river stone"},
      {"task": "demo/entities", "words": ["Anna", "lives", "in", "New", "York", "."]},
      {"task": "demo/choice", "premise": "Tom was hungry.", "choices": ["Tom ate.",
                                                                       "Tom slept."]},
      {"task": "demo/span", "question": "Where does Anna live?",
       "context": " ".join(f"Person{i} works in Paris." for i in range(12))
       + " Anna lives in Rome."},
  ]


def _predict_record(trained, record):
  task = trained.tasks[trained.task_id(record["task"])]
  example = predict.RECORD_READERS[task.type](record, "test", 1)
  return predict.predict(trained, task.name, [example])[0]


def _assert_same_answer(got, want):
  for key, value in want.items():
    if key == "id":
      continue
    if key in ("probabilities", "value", "std", "score", "tag_probabilities"):
      flat = lambda x: list(x.values()) if isinstance(x, dict) else (  # noqa: E731
          x if isinstance(x, list) else [x])
      np.testing.assert_allclose(np.asarray(flat(got[key]), float),
                                 np.asarray(flat(value), float), atol=1e-4, err_msg=key)
    else:
      assert got[key] == value, (key, got[key], value)


def test_multitask_artifact_answers_text_as_predict_does(trained, artifact):
  _, model = artifact
  records = _text_records(trained)
  answers = model.predict_texts(records)
  for record, answer in zip(records, answers):
    _assert_same_answer(answer, _predict_record(trained, record))
  tags = answers[2]
  assert tags["words"] == ["Anna", "lives", "in", "New", "York", "."]
  assert len(tags["tags"]) == 6 and "[CLS]" not in tags["words"]
  assert answers[4]["windows"] > 1  # the long context is read in windows


@pytest.mark.parametrize("task_name", ["demo/entities", "demo/span", "demo/choice"])
def test_one_task_artifact_answers_text_in_words(trained, tmp_path, task_name):
  export.export_task(trained, task_name, tmp_path)
  model = runpy.run_path(str(tmp_path / export.LOADER))["load"](tmp_path)
  record = next(r for r in _text_records(trained) if r["task"] == task_name)
  _assert_same_answer(model.predict_texts([record])[0], _predict_record(trained, record))


def test_loader_text_errors_name_the_field(artifact):
  _, model = artifact
  with pytest.raises(ValueError, match="field 'text': expected a non-empty string"):
    model.predict_texts([{"task": "demo/sentiment", "text": "  "}])
  with pytest.raises(ValueError, match="unknown task 'glue/rte'"):
    model.predict_texts([{"task": "glue/rte", "text": "x"}])


def test_cli_all_tasks_and_its_errors(micro_workdir, tmp_path, capsys):
  code = cli_export.main(["--workdir", str(micro_workdir), "--all-tasks", str(tmp_path / "a"),
                          "--no-size-comparison"])
  out = capsys.readouterr().out
  assert code == 0 and "5 tasks ->" in out
  assert "not measured" in (tmp_path / "a" / "README.md").read_text()
  with pytest.raises(SystemExit) as exit_info:
    cli_export.main(["--workdir", str(micro_workdir), "--all-tasks", "--task", "demo/span",
                     str(tmp_path / "b")])
  assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
  code = cli_export.main(["--workdir", str(micro_workdir), "--all-tasks", "--benchmark",
                          str(tmp_path / "c")])
  assert code == 2 and "--benchmark times one task's artifact" in capsys.readouterr().err

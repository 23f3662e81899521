"""Tests of the generated offline demo suite (camtl_jax/tasks/demo.py)."""
import filecmp
import os

import numpy as np
import pytest

from camtl_jax import convert
from camtl_jax import input_pipeline as ip
from camtl_jax import train
from camtl_jax.cli import common
from camtl_jax.configs import demo as demo_config
from camtl_jax.tasks import base, demo, metrics, registry


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  return demo.write_demo_data(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="module")
def tasks():
  # Importing the registry registers the demo tasks.
  return {t.name: registry.get_task(t.name) for t in demo.demo_tasks()}


def _all_files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def test_generation_is_deterministic(demo_dir, tmp_path):
  again = demo.write_demo_data(tmp_path / "again", seed=0)
  files = _all_files(demo_dir)
  assert files == _all_files(again) and len(files) == 3 * len(demo.DEMO_TASK_NAMES) + 1
  match, mismatch, errors = filecmp.cmpfiles(demo_dir, again, files, shallow=False)
  assert not mismatch and not errors
  other = demo.write_demo_data(tmp_path / "other", seed=1)
  assert not filecmp.cmp(os.path.join(demo_dir, "sentiment/train.tsv"),
                         os.path.join(other, "sentiment/train.tsv"), shallow=False)


def test_write_is_idempotent(tmp_path):
  out = demo.write_demo_data(tmp_path, seed=0)
  path = os.path.join(out, "entities", "train.conll")
  os.utime(path, (0, 0))
  demo.write_demo_data(tmp_path, seed=0)  # same seed: left alone
  assert os.path.getmtime(path) == 0
  demo.write_demo_data(tmp_path, seed=2)  # another seed: rewritten
  assert os.path.getmtime(path) > 0


def test_registered_and_readable_by_the_readers(demo_dir, tasks):
  assert set(tasks) == set(demo.DEMO_TASK_NAMES)
  assert {t.type for t in tasks.values()} == set(base.TASK_TYPES)  # one task per head type
  for name, task in tasks.items():
    assert registry.get_task(name) is task
    for split, size in demo.SPLIT_SIZES.items():
      examples = registry.load_split(task, demo_dir, split)
      assert len(examples) == size, (name, split)
      labelled = [bool(ex.label is not None or ex.answers or ex.tags) for ex in examples]
      # Test splits are unlabelled like the benchmarks' (CoNLL test files carry tags, as WNUT-17's).
      assert all(labelled) == (split != "test" or task.type == base.TAGGING), (name, split)


def test_labels_are_consistent_with_the_text(demo_dir, tasks):
  load = lambda name: registry.load_split(tasks[name], demo_dir, "train")
  for ex in load("demo/sentiment"):
    words = set(ex.texts[0].split())
    assert bool(words & set(demo._POSITIVE)) == (ex.label == "1")
    assert bool(words & set(demo._NEGATIVE)) == (ex.label == "0")
  scores = []
  for ex in load("demo/similarity"):
    a, b = (set(t.split()) for t in ex.texts)
    assert ex.label == pytest.approx(5 * len(a & b) / len(a | b), abs=1e-3)
    scores.append(ex.label)
  assert np.std(scores) > 1.0 and min(scores) == 0 and max(scores) == 5  # a spread of targets
  for ex in load("demo/entities"):
    for prev, tag in zip(("O",) + ex.tags, ex.tags):
      if tag.startswith("I-"):
        assert prev[2:] == tag[2:]
  for ex in load("demo/span"):
    (text, start), = ex.answers
    assert ex.context[start:start + len(text)] == text
    person = ex.question.split()[2]
    sentence = ex.context[:start + len(text)].rsplit(".", 1)[-1]
    assert person in sentence  # the answer is the asked person's place
  labels = [ex.label for ex in load("demo/choice")]
  assert 0.4 < np.mean(labels) < 0.6


def test_encodes_with_minilm(demo_dir, tasks, minilm_path):
  tok = convert.load_tokenizer(minilm_path)
  for name, task in tasks.items():
    s = ip.encode_split(task, registry.load_split(task, demo_dir, "dev"), tok, 64, None, "dev",
                        target_stats=(2.5, 1.0))
    assert s.num_truncated == 0, name
    if task.type == base.SPAN:
      answered = {int(i) for i, st in zip(s.arrays["example_index"], s.arrays["start_position"])
                  if st > 0}
      assert len(answered) >= 0.95 * s.num_examples  # answers straddling windows are rare


@pytest.mark.research
def test_every_demo_task_learns_in_the_demo(minilm_path, tmp_path):
  """The demo as a user runs it (`camtl-train --config demo`): every task's main dev metric is
  >= 0.8 at the selected checkpoint (docs/results/demo.md has the runs and their wall times)."""
  del minilm_path  # the demo's model_path 'minilm' is this package's checkpoint
  summary = train.train_and_evaluate(common.load_config("demo"), str(tmp_path / "demo"))
  scores = {name: metrics.main_score(registry.get_task(name), values)
            for name, values in summary["results"].items()}
  assert set(scores) == set(demo_config.DEMO_TASKS)
  assert min(scores.values()) >= 0.8, summary["results"]

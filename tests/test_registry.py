"""The task registry: the tasks of DESIGN.md section 5 with their official labels, metrics and file
names, name look-up with close matches, registration and load_split's arguments."""
import dataclasses

import pytest

from camtl_jax.tasks import registry

EXPECTED = {  # name -> (type, labels or None to skip, main metric)
    "glue/cola": ("classification", ("0", "1"), "mcc"),
    "glue/sst2": ("classification", ("0", "1"), "accuracy"),
    "glue/mrpc": ("classification", ("0", "1"), "f1"),
    "glue/stsb": ("regression", (), "pearson"),
    "glue/qqp": ("classification", ("0", "1"), "f1"),
    "glue/mnli": ("classification", ("entailment", "neutral", "contradiction"), "accuracy"),
    "glue/qnli": ("classification", ("entailment", "not_entailment"), "accuracy"),
    "glue/rte": ("classification", ("entailment", "not_entailment"), "accuracy"),
    "glue/wnli": ("classification", ("0", "1"), "accuracy"),
    "glue/ax": ("classification", ("entailment", "neutral", "contradiction"), "mcc"),
    "superglue/boolq": ("classification", ("false", "true"), "accuracy"),
    "superglue/cb": ("classification", ("entailment", "contradiction", "neutral"), "macro_f1"),
    "superglue/copa": ("multiple_choice", ("0", "1"), "accuracy"),
    "superglue/multirc": ("classification", ("0", "1"), "f1a"),
    "superglue/record": ("span", (), "span_f1"),
    "superglue/rte": ("classification", ("entailment", "not_entailment"), "accuracy"),
    "superglue/wic": ("classification", ("false", "true"), "accuracy"),
    "superglue/wsc": ("classification", ("false", "true"), "accuracy"),
    "superglue/axb": ("classification", ("entailment", "not_entailment"), "mcc"),
    "superglue/axg": ("classification", ("entailment", "not_entailment"), "accuracy"),
    "scitail": ("classification", ("entails", "neutral"), "accuracy"),
    "snli": ("classification", ("entailment", "neutral", "contradiction"), "accuracy"),
    "wnut17": ("tagging", None, "entity_f1"),
    "squad_v1": ("span", (), "span_f1"),
    **{f"mrqa/{n}": ("span", (), "span_f1") for n in (
        "squad", "newsqa", "triviaqa", "searchqa", "hotpotqa", "naturalquestions")},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_design_tasks_are_registered(name):
  task = registry.get_task(name)
  task_type, labels, main = EXPECTED[name]
  assert task.name == name and task.type == task_type and task.metrics[0] == main
  if labels is not None:
    assert task.labels == labels
  assert task.splits and all(not p.startswith("/") for p in task.splits.values())
  assert callable(task.reader)
  assert task.benchmark == {"glue": "glue", "superglue": "superglue"}.get(name.split("/")[0])


def test_wnut17_tags():
  tags = registry.get_task("wnut17").labels
  assert len(tags) == 13 and tags[0] == "O"
  assert set(tags[1:]) == {f"{p}-{e}" for p in "BI" for e in (
      "corporation", "creative-work", "group", "location", "person", "product")}


def test_official_file_names():
  get = lambda name: dict(registry.get_task(name).splits)
  assert get("glue/mrpc") == {"train": "glue/MRPC/train.tsv", "dev": "glue/MRPC/dev.tsv",
                              "test": "glue/MRPC/test.tsv"}
  assert get("glue/mnli") == {s: f"glue/MNLI/{s}.tsv" for s in (
      "train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")}
  assert get("superglue/cb") == {"train": "superglue/CB/train.jsonl",
                                 "val": "superglue/CB/val.jsonl", "test": "superglue/CB/test.jsonl"}
  assert get("wnut17") == {"train": "wnut17/wnut17train.conll", "dev": "wnut17/emerging.dev.conll",
                           "test": "wnut17/emerging.test.annotated"}
  assert get("mrqa/triviaqa") == {"train": "mrqa/train/TriviaQA-web.jsonl.gz",
                                  "dev": "mrqa/dev/TriviaQA-web.jsonl.gz"}
  assert get("squad_v1") == {"train": "squad/train-v1.1.json", "dev": "squad/dev-v1.1.json"}
  assert get("superglue/axb") == {"test": "superglue/AX-b/AX-b.jsonl"}
  assert registry.get_task("superglue/copa").num_choices == 2


def test_tfds_names():
  assert registry.get_task("glue/mrpc").tfds_name == "glue/mrpc"
  assert registry.get_task("superglue/cb").tfds_name == "super_glue/cb"
  assert registry.get_task("mrqa/naturalquestions").tfds_name == "mrqa/natural_questions"
  assert registry.get_task("squad_v1").tfds_name == "squad/v1.1"
  assert registry.get_task("scitail").tfds_name == "sci_tail"
  assert registry.get_task("wnut17").tfds_name is None


def test_shared_data_files_are_where_the_registry_says(shared_data):
  present = [(t.name, s) for t in registry.TASKS.values() for s, p in t.splits.items()
             if (shared_data / p).is_file()]
  # Every file of ../shared/data/README.md's table is found under its registry path.
  assert len(present) == 37


def test_unknown_task_lists_close_matches():
  with pytest.raises(ValueError, match=r"unknown task 'glue/mrcp'; did you mean \['glue/mrpc'"):
    registry.get_task("glue/mrcp")
  with pytest.raises(ValueError, match=r"unknown task 'rte'; did you mean .*'glue/rte'.*"
                     r"'superglue/rte'"):
    registry.get_task("rte")


def test_register_task():
  task = dataclasses.replace(registry.get_task("glue/rte"), name="test/rte_copy")
  try:
    assert registry.register_task(task) is task and registry.get_task("test/rte_copy") is task
    with pytest.raises(ValueError, match="already registered"):
      registry.register_task(task)
    registry.register_task(task, overwrite=True)
    with pytest.raises(ValueError, match="unknown type 'ranking'"):
      registry.register_task(dataclasses.replace(task, type="ranking"), overwrite=True)
  finally:
    registry.TASKS.pop("test/rte_copy", None)


def test_load_split_arguments(tmp_path, shared_data):
  by_name = registry.load_split("glue/wnli", shared_data, "dev")
  by_task = registry.load_split(registry.get_task("glue/wnli"), str(shared_data), "dev")
  assert by_name == by_task and len(by_name) == 71
  with pytest.raises(ValueError, match=r"unknown source 'hub'; known: \['local', 'tfds'\]"):
    registry.load_split("glue/wnli", shared_data, "dev", source="hub")
  with pytest.raises(ValueError, match=r"unknown task"):
    registry.load_split("glue/wlni_typo", shared_data, "dev")

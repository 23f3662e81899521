"""The TFDS source gives the same Examples as the file readers.

How this runs offline and without TensorFlow (which is not installed here): TFDS writes
array_record datasets with pure-Python serialisation, so the `tfds_dir` fixture prepares real TFDS
datasets from the real files of ../shared/data with TFDS's own GLUE and SuperGLUE builders (their
_generate_examples does the parsing; only _split_generators is replaced to point at the local files
instead of downloading them, and SuperGLUE's tf.int32 feature dtypes are given as np.int32). The
source then reads them back through builder_from_files, and each split must equal what the file
reader gives. Formats whose TFDS features are ragged (MRQA) or that are not in ../shared/data
(SQuAD, ReCoRD, SNLI) go through tfds.testing.mock_data with records in the TFDS feature layout;
mock_data's random records check GLUE/SNLI/MultiRC conversion end to end.
"""
import importlib.util
import sys
import tempfile
import types

import numpy as np
import pytest

from camtl_jax.tasks import registry, tfds_source
from camtl_jax.tasks.base import DataError

tfds = pytest.importorskip("tensorflow_datasets")
glue = pytest.importorskip("tensorflow_datasets.text.glue")
super_glue = pytest.importorskip("tensorflow_datasets.text.super_glue")

# config -> {TFDS split: (folder, file, the split argument TFDS's _generate_examples expects)}
GLUE_FILES = {
    "cola": {"validation": ("CoLA", "dev.tsv", "dev"), "test": ("CoLA", "test.tsv", "test")},
    "sst2": {"validation": ("SST-2", "dev.tsv", "dev")},
    "stsb": {"validation": ("STS-B", "dev.tsv", "dev"), "test": ("STS-B", "test.tsv", "test")},
    "rte": {"validation": ("RTE", "dev.tsv", "dev"), "test": ("RTE", "test.tsv", "test")},
    "wnli": {"train": ("WNLI", "train.tsv", "train"), "validation": ("WNLI", "dev.tsv", "dev")},
    "qnli": {"validation": ("QNLI", "dev.tsv", "dev")},
    "mrpc": {"test": ("MRPC", "test.tsv", "test")},
}
SUPERGLUE_FILES = {
    "cb": {"train": ("CB", "train.jsonl"), "validation": ("CB", "val.jsonl"),
           "test": ("CB", "test.jsonl")},
    "copa": {"validation": ("COPA", "val.jsonl"), "test": ("COPA", "test.jsonl")},
    "boolq": {"validation": ("BoolQ", "val.jsonl")},
    "wic": {"validation": ("WiC", "val.jsonl")},
    "wsc": {"train": ("WSC", "train.jsonl"), "validation": ("WSC", "val.jsonl")},
    "multirc": {"validation": ("MultiRC", "val.jsonl")},
    "rte": {"validation": ("RTE", "val.jsonl")},
}
OUR_SPLIT = {"validation": "dev", "train": "train", "test": "test"}
ROUND_TRIPS = ([(f"glue/{c}", OUR_SPLIT[s]) for c, splits in GLUE_FILES.items() for s in splits]
               + [(f"superglue/{c}", {"validation": "val"}.get(s, s))
                  for c, splits in SUPERGLUE_FILES.items() for s in splits])


def _local_builders(shared):
  class LocalGlue(glue.Glue, skip_registration=True):
    name = "glue"
    code_path = None  # Else TFDS looks for checksums beside this file (needs importlib_resources).

    def _split_generators(self, dl_manager):
      gens = []
      for split, (folder, file, arg) in GLUE_FILES[self.builder_config.name].items():
        path = str(shared / "glue" / folder / file)
        kwargs = ({"data_file": None, "mrpc_files": {"test": path}}
                  if self.builder_config.name == "mrpc" else {"data_file": path})
        gens.append(tfds.core.SplitGenerator(name=split, gen_kwargs={**kwargs, "split": arg}))
      return gens

  class LocalSuperGlue(super_glue.SuperGlue, skip_registration=True):
    name = "super_glue"
    code_path = None

    def _split_generators(self, dl_manager):
      return [tfds.core.SplitGenerator(name=split, gen_kwargs={
          "data_file": str(shared / "superglue" / folder / file), "split": split})
              for split, (folder, file) in SUPERGLUE_FILES[self.builder_config.name].items()]

  return LocalGlue, LocalSuperGlue


@pytest.fixture(scope="module", autouse=True)
def _tfds_temp_dirs_under_pytest(tmp_path_factory):
  """TFDS's DatasetInfo leaves an empty tempfile.mkdtemp("tfds") behind for every dataset it
  prepares or reads; keep them in pytest's temporary directory instead of the system's."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tfds_tmp")))
    yield


@pytest.fixture(scope="module")
def tfds_dir(shared_data, tmp_path_factory):
  """Real TFDS array_record datasets prepared from ../shared/data (about 2 s)."""
  out = tmp_path_factory.mktemp("tfds")
  local_glue, local_super_glue = _local_builders(shared_data)
  with pytest.MonkeyPatch.context() as mp:
    # SuperGLUE's _info names tf.int32; numpy's is the same dtype and needs no TensorFlow.
    mp.setattr(super_glue, "tf", types.SimpleNamespace(int32=np.int32))
    for config in GLUE_FILES:
      local_glue(config=config, data_dir=str(out),
                 file_format="array_record").download_and_prepare()
    for config in SUPERGLUE_FILES:
      local_super_glue(config=config, data_dir=str(out),
                       file_format="array_record").download_and_prepare()
  return out


def comparable(examples):
  """Everything but the guid (which names the source), in example_id order (TFDS shuffles).

  TFDS keeps STS-B scores as float32 (2.33333333333333 -> 2.3333333), so scores compare as float32.
  """
  label = lambda ex: np.float32(ex.label) if isinstance(ex.label, float) else ex.label
  return sorted(((ex.example_id, ex.texts, label(ex), ex.choices) for ex in examples),
                key=lambda row: row[0])


@pytest.mark.parametrize("task_name,split", ROUND_TRIPS)
def test_tfds_equals_file_reader(tfds_dir, shared_data, task_name, split):
  from_tfds = registry.load_split(task_name, tfds_dir, split, source="tfds")
  from_files = registry.load_split(task_name, shared_data, split)
  assert len(from_tfds) == len(from_files)
  assert comparable(from_tfds) == comparable(from_files)
  assert from_tfds[0].guid.startswith(f"tfds:{registry.get_task(task_name).tfds_name}/")
  assert from_tfds[0].guid.endswith("[0]")


def test_runs_without_tensorflow(tfds_dir):
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here")
  registry.load_split("superglue/wsc", tfds_dir, "val", source="tfds")
  assert "tensorflow" not in sys.modules


def test_missing_dataset_or_split(tmp_path, tfds_dir):
  with pytest.raises(DataError, match=r"tfds:glue/rte/validation: no prepared TFDS dataset "
                     r"'glue/rte' in data_dir .*tfds build glue/rte"):
    registry.load_split("glue/rte", tmp_path, "dev", source="tfds")
  with pytest.raises(DataError, match=r"tfds:glue/sst2/test: no split 'test'; the prepared "
                     r"dataset has \['validation'\]"):
    registry.load_split("glue/sst2", tfds_dir, "test", source="tfds")
  with pytest.raises(ValueError, match=r"'wnut17' has no TFDS source"):
    registry.load_split("wnut17", tmp_path, "train", source="tfds")


def test_missing_tensorflow_datasets_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match=r"source='tfds' needs tensorflow_datasets"):
    registry.load_split("glue/rte", tmp_path, "dev", source="tfds")


def _glue_label_map(config):
  named = {"unacceptable": "0", "acceptable": "1", "negative": "0", "positive": "1",
           "not_equivalent": "0", "equivalent": "1", "not_duplicate": "0", "duplicate": "1"}
  if config == "wnli":  # WNLI's files say 0/1, TFDS names them.
    named = {"not_entailment": "0", "entailment": "1"}
  return named


def test_label_order_is_the_tfds_class_order():
  for config in glue.Glue.BUILDER_CONFIGS:
    if not config.label_classes or config.name.startswith("mnli_"):
      continue
    named = _glue_label_map(config.name)
    assert tuple(named.get(c, c) for c in config.label_classes) == registry.get_task(
        f"glue/{config.name}").labels, config.name
  boolean = {"False": "false", "True": "true"}
  as_index = {"False": "0", "True": "1", "choice1": "0", "choice2": "1"}
  for config in super_glue.SuperGlue.BUILDER_CONFIGS:
    if config.name in ("record", "wsc.fixed"):
      continue
    task = registry.get_task(f"superglue/{config.name}")
    named = as_index if task.labels == ("0", "1") else boolean
    assert tuple(named.get(c, c) for c in config.label_classes) == task.labels, config.name
  assert tfds.builder("snli").info.features["label"].names == list(registry.get_task("snli").labels)
  assert tfds.builder("sci_tail").info.features["label"].names == list(
      registry.get_task("scitail").labels)


@pytest.mark.parametrize("task_name,split", [("glue/rte", "dev"), ("glue/stsb", "test"),
                                             ("snli", "train"), ("superglue/multirc", "val")])
def test_mock_data_records_convert(task_name, split, tmp_path):
  task = registry.get_task(task_name)
  with tfds.testing.mock_data(num_examples=4):
    examples = registry.load_split(task, tmp_path, split, source="tfds")
  assert len(examples) == 4
  for ex in examples:
    assert all(isinstance(t, str) for t in ex.texts) and len(ex.texts) == 2
    assert ex.label is None or ex.label in task.labels or isinstance(ex.label, float)


def _records(records):
  """An as_data_source_fn that serves fixed records, in TFDS's decoded layout."""
  return lambda self, split, **kwargs: records


def test_snli_no_gold_label_records_are_counted(tmp_path):
  records = [{"premise": b"A man.", "hypothesis": b"A person.", "label": np.int64(label)}
             for label in (0, -1, 2)]
  with tfds.testing.mock_data(as_data_source_fn=_records(records)):
    examples, skipped = registry.load_split_with_report("snli", tmp_path, "dev", source="tfds")
  assert [ex.label for ex in examples] == ["entailment", "contradiction"]
  assert skipped == {"no_gold_label": 1}


def test_squad_record_and_mrqa_layouts(tmp_path):
  context = "The Eiffel Tower is in Paris. It was built in 1889."
  squad = [{"id": b"5733be", "title": b"Eiffel", "context": context.encode(),
            "question": b"Where?", "answers": {"text": np.array([b"Paris", b"in Paris"]),
                                               "answer_start": np.array([23, 20], np.int32)}}]
  with tfds.testing.mock_data(as_data_source_fn=_records(squad)):
    [ex] = registry.load_split("squad_v1", tmp_path, "dev", source="tfds")
  assert ex.answers == (("Paris", 23), ("in Paris", 20)) and ex.example_id == "5733be"
  mrqa = [{"qid": "q1", "question": "Where?", "context": context, "subset": "SQuAD",
           "answers": np.array(["paris"]),
           "detected_answers": {"text": np.array(["Paris"]),
                                "char_spans": {"start": np.array([[23, 23]], np.int32),
                                               "end": np.array([[27, 27]], np.int32)}}}]
  with tfds.testing.mock_data(as_data_source_fn=_records(mrqa)):
    [ex] = registry.load_split("mrqa/squad", tmp_path, "dev", source="tfds")
  assert ex.answers == (("Paris", 23),) and ex.answer_texts == ("paris",)
  record = [{"passage": b"France won. Macron said France won.", "query": b"@placeholder won",
             "entities": np.array([b"France", b"Macron"]), "answers": np.array([b"France"]),
             "idx": {"passage": np.int32(0), "query": np.int32(7)}}]
  with tfds.testing.mock_data(as_data_source_fn=_records(record)):
    [ex] = registry.load_split("superglue/record", tmp_path, "val", source="tfds")
  assert ex.answers == (("France", 0),) and ex.example_id == 7


def test_bad_record_names_the_record(tmp_path):
  records = [{"idx": np.int32(0), "sentence1": b"A", "sentence2": b"B", "label": np.int64(0)},
             {"idx": np.int32(1), "sentence1": b"A", "sentence2": b"B", "label": np.int64(5)}]
  with tfds.testing.mock_data(as_data_source_fn=_records(records)):
    with pytest.raises(DataError, match=r"tfds:glue/rte/validation\[1\], field 'label': class "
                       r"index 5 outside 0..1"):
      registry.load_split("glue/rte", tmp_path, "dev", source="tfds")
    examples, skipped = registry.load_split_with_report("glue/rte", tmp_path, "dev", source="tfds",
                                                        skip_invalid=True)
  assert len(examples) == 1 and skipped == {"invalid": 1}


def test_split_names():
  assert tfds_source.TFDS_SPLITS["dev_mismatched"] == "validation_mismatched"
  assert tfds_source.TFDS_SPLITS["val"] == "validation"
  # Every registered task with a TFDS dataset has a converter.
  assert {n for n, t in registry.TASKS.items() if t.tfds_name} <= set(tfds_source.CONVERTERS)


RTE_RECORD = {"idx": np.int32(0), "sentence1": b"A", "sentence2": b"B", "label": np.int64(0)}
COPA_RECORD = {"idx": np.int32(0), "premise": b"A.", "choice1": b"B.", "choice2": b"C.",
               "question": b"cause", "label": np.int64(0)}
WIC_RECORD = {"idx": np.int32(0), "word": b"go", "sentence1": b"go now", "sentence2": b"I go",
              "start1": np.int32(0), "end1": np.int32(2), "start2": np.int32(2),
              "end2": np.int32(4), "label": np.int64(0)}
MULTIRC_RECORD = {"idx": {"paragraph": np.int32(0), "question": np.int32(0),
                          "answer": np.int32(0)},
                  "paragraph": b"P", "question": b"Q", "answer": b"A", "label": np.int64(0)}
SQUAD_RECORD = {"id": b"5733be", "title": b"Eiffel", "context": b"Paris. Paris.",
                "question": b"Where?", "answers": {"text": np.array([b"Paris", b"Paris"]),
                                                   "answer_start": np.array([0, 7], np.int32)}}
MRQA_RECORD = {"qid": "q1", "question": "Where?", "context": "In Paris.", "subset": "SQuAD",
               "answers": np.array(["Paris", "in Paris"]),
               "detected_answers": {"text": np.array(["Paris"]),
                                    "char_spans": {"start": np.array([[3]], np.int32),
                                                   "end": np.array([[7]], np.int32)}}}
RECORD_RECORD = {"passage": b"France won.", "query": b"@placeholder won",
                 "entities": np.array([b"France"]), "answers": np.array([b"France", b"France"]),
                 "idx": {"passage": np.int32(0), "query": np.int32(7)}}

EMPTY_TEXT_RECORDS = [  # (task, split, TFDS split, a valid record, change, field)
    ("glue/rte", "dev", "glue/rte/validation", RTE_RECORD, {"sentence1": b""}, "sentence1"),
    ("superglue/copa", "val", "super_glue/copa/validation", COPA_RECORD, {"choice1": b"  "},
     "choice1"),
    ("superglue/wic", "val", "super_glue/wic/validation", WIC_RECORD, {"word": b""}, "word"),
    ("superglue/multirc", "val", "super_glue/multirc/validation", MULTIRC_RECORD,
     {"answer": b" "}, "answer"),
    ("squad_v1", "dev", "squad/v1.1/validation", SQUAD_RECORD,
     {"answers": {"text": np.array([b"Paris", b""]), "answer_start": np.array([0, 7], np.int32)}},
     "answers.text[1]"),
    ("squad_v1", "dev", "squad/v1.1/validation", SQUAD_RECORD, {"question": b""}, "question"),
    ("mrqa/squad", "dev", "mrqa/squad/validation", MRQA_RECORD, {"question": " "}, "question"),
    ("mrqa/squad", "dev", "mrqa/squad/validation", MRQA_RECORD,
     {"answers": np.array(["Paris", ""])}, "answers[1]"),
    ("superglue/record", "val", "super_glue/record/validation", RECORD_RECORD,
     {"answers": np.array([b"France", b""])}, "answers[1]"),
    ("superglue/record", "val", "super_glue/record/validation", RECORD_RECORD, {"query": b""},
     "query"),
]


@pytest.mark.parametrize("task_name,split,where,record,change,field", EMPTY_TEXT_RECORDS,
                         ids=[f"{t}-{f}" for t, _, _, _, _, f in EMPTY_TEXT_RECORDS])
def test_empty_text_names_the_record(tmp_path, monkeypatch, task_name, split, where, record,
                                     change, field):
  # SuperGLUE's _info names tf.int32 (COPA, WiC); numpy's is the same dtype and needs no TensorFlow.
  monkeypatch.setattr(super_glue, "tf", types.SimpleNamespace(int32=np.int32))
  records = [record, {**record, **change}]
  with tfds.testing.mock_data(as_data_source_fn=_records(records)):
    with pytest.raises(DataError) as info:
      registry.load_split(task_name, tmp_path, split, source="tfds")
    examples, skipped = registry.load_split_with_report(task_name, tmp_path, split,
                                                        source="tfds", skip_invalid=True)
  err = info.value
  assert (err.path, err.line, err.field) == (f"tfds:{where}[1]", None, field)
  assert str(err).startswith(f"tfds:{where}[1], field '{field}': empty text"), str(err)
  # Refused, not dropped: the valid record converts, the empty one is counted as invalid.
  assert len(examples) == 1 and skipped == {"invalid": 1}

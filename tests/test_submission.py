"""GLUE tsv and SuperGLUE jsonl submission files: names, headers, label spellings, ordering, MultiRC
nesting, STS-B clipping, and errors."""
import json
import logging

import pytest

from camtl_jax.tasks import registry, submission


def read_tsv(path):
  return [line.split("\t") for line in path.read_text().splitlines()]


def read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_glue_rte_on_the_real_test_ids(tmp_path, shared_data, caplog):
  test = registry.load_split("glue/rte", shared_data, "test")
  ids = [ex.example_id for ex in test][::-1]  # any order in, sorted out
  preds = ["entailment" if i % 3 else "not_entailment" for i in ids]
  with caplog.at_level(logging.WARNING):
    path = submission.write_glue_submission("glue/rte", preds, ids, tmp_path)
  assert path == tmp_path / "RTE.tsv" and "official test set" not in caplog.text
  rows = read_tsv(path)
  assert rows[0] == ["index", "prediction"] and len(rows) == 3001
  assert rows[1:4] == [["0", "not_entailment"], ["1", "entailment"], ["2", "entailment"]]


def test_glue_binary_labels_and_class_indices(tmp_path):
  path = submission.write_glue_submission(registry.get_task("glue/cola"), [1, "0", 0], [2, 0, 1],
                                          tmp_path)
  assert path.name == "CoLA.tsv"
  assert read_tsv(path)[1:] == [["0", "0"], ["1", "0"], ["2", "1"]]


def test_glue_mnli_files_and_stsb_clipping(tmp_path):
  m = submission.write_glue_submission("glue/mnli", ["neutral", 2], [0, 1], tmp_path,
                                       split="test_matched")
  mm = submission.write_glue_submission("glue/mnli", ["entailment"], [0], tmp_path,
                                        split="test_mismatched")
  assert (m.name, mm.name) == ("MNLI-m.tsv", "MNLI-mm.tsv")
  assert read_tsv(m)[1:] == [["0", "neutral"], ["1", "contradiction"]]
  with pytest.raises(ValueError, match=r"glue/mnli: split must be one of \['test_matched', "
                     r"'test_mismatched'\]"):
    submission.write_glue_submission("glue/mnli", ["neutral"], [0], tmp_path)
  stsb = submission.write_glue_submission("glue/stsb", [-0.2, 2.71828, 5.4], [0, 1, 2], tmp_path)
  assert read_tsv(stsb)[1:] == [["0", "0.000"], ["1", "2.718"], ["2", "5.000"]]
  ax = submission.write_glue_submission("glue/ax", ["contradiction"], [0], tmp_path)
  assert ax.name == "AX.tsv"


def test_glue_errors(tmp_path, caplog):
  with pytest.raises(ValueError, match=r"glue/rte: unknown prediction label 'yes'"):
    submission.write_glue_submission("glue/rte", ["yes"], [0], tmp_path)
  with pytest.raises(ValueError, match=r"repeated example ids \[0\]"):
    submission.write_glue_submission("glue/rte", ["entailment"] * 2, [0, 0], tmp_path)
  with pytest.raises(ValueError, match=r"2 predictions for 1 ids"):
    submission.write_glue_submission("glue/rte", ["entailment"] * 2, [0], tmp_path)
  with pytest.raises(ValueError, match=r"superglue/cb is not a GLUE task"):
    submission.write_glue_submission("superglue/cb", ["neutral"], [0], tmp_path)
  with pytest.raises(ValueError, match=r"not a finite number"):
    submission.write_glue_submission("glue/stsb", [float("nan")], [0], tmp_path)
  with caplog.at_level(logging.WARNING):
    submission.write_glue_submission("glue/rte", ["entailment"], [0], tmp_path)
  assert "RTE: 1 predictions; the official test set has 3000" in caplog.text


def test_superglue_label_spellings(tmp_path):
  cases = {  # task -> (predictions, expected labels in the file)
      "superglue/boolq": (["true", 0], ["true", "false"]),
      "superglue/wic": ([1, "false"], ["true", "false"]),
      "superglue/wsc": (["true", 0], ["True", "False"]),
      "superglue/cb": (["neutral", 1], ["neutral", "contradiction"]),
      "superglue/rte": (["not_entailment", 0], ["not_entailment", "entailment"]),
      "superglue/copa": ([1, 0], [1, 0]),
      "superglue/axb": (["entailment", 1], ["entailment", "not_entailment"]),
      "superglue/axg": (["entailment", 1], ["entailment", "not_entailment"]),
      "superglue/record": (["France", "Paris"], ["France", "Paris"]),
  }
  files = {}
  for name, (preds, expected) in cases.items():
    path = submission.write_superglue_submission(name, preds, [0, 1], tmp_path)
    assert read_jsonl(path) == [{"idx": 0, "label": expected[0]}, {"idx": 1, "label": expected[1]}]
    files[name] = path.name
  assert files == {"superglue/boolq": "BoolQ.jsonl", "superglue/wic": "WiC.jsonl",
                   "superglue/wsc": "WSC.jsonl", "superglue/cb": "CB.jsonl",
                   "superglue/rte": "RTE.jsonl", "superglue/copa": "COPA.jsonl",
                   "superglue/axb": "AX-b.jsonl", "superglue/axg": "AX-g.jsonl",
                   "superglue/record": "ReCoRD.jsonl"}
  with pytest.raises(ValueError, match=r"choice 2 outside 0..1"):
    submission.write_superglue_submission("superglue/copa", [2], [0], tmp_path)


def test_multirc_nested_per_paragraph(tmp_path, shared_data):
  val = registry.load_split("superglue/multirc", shared_data, "val")
  ids = [ex.example_id for ex in val]
  path = submission.write_superglue_submission("superglue/multirc", [ex.label for ex in val], ids,
                                               tmp_path)
  records = read_jsonl(path)
  assert path.name == "MultiRC.jsonl" and len(records) == 83
  assert sum(len(r["passage"]["questions"]) for r in records) == 953
  assert sum(len(q["answers"]) for r in records for q in r["passage"]["questions"]) == 4848
  first = json.loads((shared_data / "superglue/MultiRC/val.jsonl").read_text().splitlines()[0])
  assert records[0] == {"idx": 0, "passage": {"questions": [
      {"idx": q["idx"], "answers": [{"idx": a["idx"], "label": a["label"]} for a in q["answers"]]}
      for q in first["passage"]["questions"]]}}
  with pytest.raises(ValueError, match=r"must be \(paragraph, question, answer\)"):
    submission.write_superglue_submission("superglue/multirc", ["1"], [5], tmp_path)
  with pytest.raises(ValueError, match=r"glue/rte is not a SuperGLUE task"):
    submission.write_superglue_submission("glue/rte", ["entailment"], [0], tmp_path)

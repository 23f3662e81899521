"""Official metrics against sklearn / scipy / seqeval / the SQuAD script's logic on hand-checked
cases, per-task scores, and the GLUE / SuperGLUE aggregates against published leaderboard rows."""
import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import sklearn.metrics

from camtl_jax.tasks import metrics, registry
from camtl_jax.tasks.base import Example

get = registry.get_task


def test_accuracy_and_binary_f1_hand_checked():
  preds, refs = ["1", "1", "0", "1"], ["1", "0", "0", "1"]
  # TP=2, FP=1, FN=0: F1 = 2*2 / (2*2 + 1) = 0.8.
  assert metrics.compute_metrics(get("glue/mrpc"), preds, refs) == {"f1": 0.8, "accuracy": 0.75}
  # Class indices are the same as the label strings.
  assert metrics.compute_metrics(get("glue/mrpc"), [1, 1, 0, 1], refs)["f1"] == 0.8


def test_classification_metrics_equal_sklearn():
  rng = np.random.default_rng(0)
  refs = [str(x) for x in rng.integers(0, 2, 200)]
  preds = [r if rng.random() < 0.7 else str(1 - int(r)) for r in refs]
  out = metrics.compute_metrics(get("glue/qqp"), preds, refs)
  assert out["f1"] == pytest.approx(sklearn.metrics.f1_score(refs, preds, pos_label="1"))
  assert out["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(refs, preds))
  cola = metrics.compute_metrics(get("glue/cola"), preds, refs)
  assert cola == {"mcc": pytest.approx(sklearn.metrics.matthews_corrcoef(refs, preds))}


def test_cb_accuracy_and_macro_f1():
  refs = ["entailment", "contradiction", "neutral", "neutral", "entailment"]
  preds = ["entailment", "neutral", "neutral", "contradiction", "entailment"]
  out = metrics.compute_metrics(get("superglue/cb"), preds, refs)
  # Per class F1: entailment 1, contradiction 0, neutral 0.5 -> macro 0.5.
  assert out == {"macro_f1": pytest.approx(0.5), "accuracy": pytest.approx(0.6)}
  assert out["macro_f1"] == pytest.approx(sklearn.metrics.f1_score(refs, preds, average="macro"))
  assert metrics.main_score(get("superglue/cb"), out) == pytest.approx(0.55)


def test_stsb_pearson_spearman_equal_scipy():
  preds, refs = [0.5, 2.0, 2.5, 4.9, 3.0], [0.0, 1.8, 3.0, 5.0, 2.6]
  out = metrics.compute_metrics(get("glue/stsb"), preds, refs)
  assert out["pearson"] == pytest.approx(scipy.stats.pearsonr(preds, refs)[0])
  assert out["spearman"] == pytest.approx(0.9)  # ranks 1 2 3 5 4 vs 1 2 4 5 3: 1 - 6*4/120
  assert out["spearman"] == pytest.approx(scipy.stats.spearmanr(preds, refs)[0])


def test_multirc_f1a_and_question_em():
  ids = [(0, 0, 0), (0, 0, 1), (0, 1, 2), (0, 1, 3), (1, 2, 4)]
  refs = ["1", "0", "1", "1", "0"]
  preds = ["1", "0", "1", "0", "0"]  # question 1 has one wrong answer
  out = metrics.compute_metrics(get("superglue/multirc"), preds, refs, example_ids=ids)
  assert out["question_em"] == pytest.approx(2 / 3)
  assert out["f1a"] == pytest.approx(0.8)  # TP 2, FN 1, FP 0
  with pytest.raises(ValueError, match="needs example_ids"):
    metrics.compute_metrics(get("superglue/multirc"), preds, refs)


def test_squad_normalisation_and_scores():
  assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
  assert metrics.normalize_answer("An ananas and a theme") == "ananas and theme"
  assert metrics.squad_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
  assert metrics.squad_f1("dog", "cat") == 0.0
  assert metrics.squad_exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
  out = metrics.compute_metrics(get("squad_v1"), ["Paris", "in 1889", "Rome"],
                                [["in Paris", "Paris"], "1889", ["Paris"]])
  # EM: 1, 0, 0; F1: 1, 2/3 (P 1/2, R 1), 0.
  assert out == {"span_f1": pytest.approx((1 + 2 / 3) / 3), "span_em": pytest.approx(1 / 3)}
  assert metrics.main_score(get("squad_v1"), out) == out["span_f1"]  # MRQA/SQuAD rank by F1
  assert metrics.main_score(get("superglue/record"), out) == pytest.approx(
      (out["span_f1"] + out["span_em"]) / 2)


def test_gold_answers_of_examples():
  assert metrics.gold_answers(Example("g", answers=(("Paris", 3),))) == ["Paris"]
  assert metrics.gold_answers(Example("g", answers=(("Paris", 3),),
                                      answer_texts=("paris", "in Paris"))) == ["paris", "in Paris"]


def test_entity_f1_equals_seqeval():
  gold = [["B-person", "I-person", "O", "B-location"], ["O", "B-group"]]
  pred = [["B-person", "I-person", "O", "O"], ["O", "B-group"]]
  out = metrics.compute_metrics(get("wnut17"), pred, gold)
  assert out == {"entity_f1": pytest.approx(0.8)}  # P 1, R 2/3
  assert out["entity_f1"] == pytest.approx(seqeval.metrics.f1_score(gold, pred))


def test_wnut17_gold_against_itself(shared_data):
  dev = registry.load_split("wnut17", shared_data, "dev")
  gold = [list(ex.tags) for ex in dev]
  assert metrics.compute_metrics(get("wnut17"), gold, gold) == {"entity_f1": 1.0}
  assert seqeval.metrics.f1_score(gold, gold) == 1.0
  # Drop every third entity start: still equal to seqeval's value.
  pred = [["O" if t.startswith("B-") and i % 3 == 0 else t for i, t in enumerate(s)] for s in gold]
  value = metrics.compute_metrics(get("wnut17"), pred, gold)["entity_f1"]
  assert value == pytest.approx(seqeval.metrics.f1_score(gold, pred)) and 0.5 < value < 1.0


def test_copa_accuracy_on_choice_indices():
  assert metrics.compute_metrics(get("superglue/copa"), [0, 1, 1], [0, 1, 0]) == {
      "accuracy": pytest.approx(2 / 3)}


def test_mnli_matched_and_mismatched():
  mnli = get("glue/mnli")
  m = metrics.compute_metrics(mnli, ["neutral", "entailment"], ["neutral", "neutral"],
                              split="dev_matched")
  mm = metrics.compute_metrics(mnli, ["neutral"], ["neutral"], split="dev_mismatched")
  assert m == {"accuracy_m": 0.5} and mm == {"accuracy_mm": 1.0}
  assert metrics.main_score(mnli, {**m, **mm}) == 0.75


# The GLUE leaderboard row of BERT-large (score 80.5). Counting MNLI-m and MNLI-mm as two tasks
# would give 81.1, so this pins MNLI's treatment.
BERT_LARGE_GLUE = {
    "glue/cola": {"mcc": 0.605}, "glue/sst2": {"accuracy": 0.949},
    "glue/mrpc": {"f1": 0.893, "accuracy": 0.854},
    "glue/stsb": {"pearson": 0.876, "spearman": 0.865},
    "glue/qqp": {"f1": 0.721, "accuracy": 0.893},
    "glue/mnli": {"accuracy_m": 0.867, "accuracy_mm": 0.859}, "glue/qnli": {"accuracy": 0.927},
    "glue/rte": {"accuracy": 0.701}, "glue/wnli": {"accuracy": 0.651},
    "glue/ax": {"mcc": 0.396},  # diagnostic: not in the score
}
# The SuperGLUE leaderboard row of the BERT-large baseline (score 69.0).
BERT_LARGE_SUPERGLUE = {
    "superglue/boolq": {"accuracy": 0.774},
    "superglue/cb": {"macro_f1": 0.757, "accuracy": 0.836}, "superglue/copa": {"accuracy": 0.706},
    "superglue/multirc": {"f1a": 0.700, "question_em": 0.241},
    "superglue/record": {"span_f1": 0.720, "span_em": 0.713}, "superglue/rte": {"accuracy": 0.717},
    "superglue/wic": {"accuracy": 0.696}, "superglue/wsc": {"accuracy": 0.644},
    "superglue/axb": {"mcc": 0.230},
}


def test_aggregate_scores_match_the_leaderboards():
  assert round(100 * metrics.aggregate_score(BERT_LARGE_GLUE, "glue", strict=True), 1) == 80.5
  assert round(100 * metrics.aggregate_score(BERT_LARGE_SUPERGLUE, "superglue", strict=True),
               1) == 69.0


def test_aggregate_over_present_tasks_and_strict():
  eight = {k: v for k, v in BERT_LARGE_GLUE.items() if k != "glue/wnli"}
  expected = np.mean([metrics.main_score(get(k), v) for k, v in eight.items() if k != "glue/ax"])
  assert metrics.aggregate_score(eight, "glue") == pytest.approx(expected)
  with pytest.raises(ValueError, match=r"missing results for \['glue/wnli'\]"):
    metrics.aggregate_score(eight, "glue", strict=True)
  with pytest.raises(ValueError, match="unknown benchmark 'xtreme'"):
    metrics.aggregate_score(eight, "xtreme")


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"glue/rte: unknown prediction label 'yes'; labels: "
                     r"\['entailment', 'not_entailment'\]"):
    metrics.compute_metrics(get("glue/rte"), ["yes"], ["entailment"])
  with pytest.raises(ValueError, match=r"2 predictions for 1 references"):
    metrics.compute_metrics(get("glue/rte"), ["entailment"] * 2, ["entailment"])
  with pytest.raises(ValueError, match=r"class index 3 outside 0..1"):
    metrics.compute_metrics(get("glue/rte"), [3], ["entailment"])
  with pytest.raises(ValueError, match=r"no predictions"):
    metrics.compute_metrics(get("glue/rte"), [], [])

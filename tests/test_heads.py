"""The stacked task heads alone (random features): shapes, masking, per-example losses vs numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camtl_jax.models.bert import MASK_VALUE
from camtl_jax.models.heads import (
    HEAD_INPUTS, Features, HeadLayout, Heads, LOG_VAR_BOUND, TaskSpec)
from camtl_jax.tasks import base

TASKS = (
    TaskSpec("cls3", base.CLASSIFICATION, 3),
    TaskSpec("reg", base.REGRESSION, 1),
    TaskSpec("mc3", base.MULTIPLE_CHOICE, 3),
    TaskSpec("span", base.SPAN),
    TaskSpec("tag4", base.TAGGING, 4),
    TaskSpec("cls2", base.CLASSIFICATION, 2),
    TaskSpec("mc2", base.MULTIPLE_CHOICE, 2),
    TaskSpec("tag2", base.TAGGING, 2),
)
B, K, L, D = 10, 3, 7, 16
TASK_ID = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 4], np.int32)


def _batch(rng):
  attention = np.zeros((B, K, L), np.int32)
  attention[:, 0, :5] = 1
  attention[2, :, :4] = 1  # mc3 example: three real choices
  attention[6, 1, :3] = 1  # mc2 example: two choices, row 2 empty
  context = np.zeros((B, L), np.int32)
  context[3, 3:6] = 1  # span example: context tokens 3..5
  tags = np.full((B, L), -1, np.int32)
  tags[4, [1, 2, 4]] = [0, 3, 2]  # first sub-tokens only
  tags[7, [1, 3]] = [1, 0]
  # row 9 (tag4) has no labelled token: loss 0
  return {
      "task_id": TASK_ID, "attention_mask": attention,
      "label": np.array([2, 0, 1, 0, 0, 1, 1, 0, 1, 0], np.int32),
      "target": np.array([0, 1.5, 0, 0, 0, 0, 0, 0, 0, 0], np.float32),
      "start_position": np.array([0, 0, 0, 4, 0, 0, 0, 0, 0, 0], np.int32),
      "end_position": np.array([0, 0, 0, 5, 0, 0, 0, 0, 0, 0], np.int32),
      "context_mask": context, "token_labels": tags}


@pytest.fixture(scope="module")
def heads():
  rng = np.random.default_rng(0)
  features = Features(pooled=jnp.asarray(rng.normal(size=(B, K, D)), jnp.float32),
                      hidden=jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32))
  batch = _batch(rng)
  module = Heads(TASKS)
  params = module.init(jax.random.key(0), features, batch)["params"]
  # The log-variance head is zero-initialised; perturb it so the aux loss test is not trivial.
  params["regression"]["log_var"]["kernel"] = jnp.asarray(0.3 * rng.normal(size=(1, D, 1)),
                                                         jnp.float32)
  out = jax.jit(module.apply)({"params": params}, features, batch)
  return module, params, features, batch, out


def _np(x):
  return np.asarray(x, np.float64)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _linear(params, x, slot):
  return x @ _np(params["kernel"][slot]) + _np(params["bias"][slot])


def test_layout_slots_and_stacked_shapes(heads):
  _, params, _, _, _ = heads
  layout = HeadLayout.from_tasks(TASKS)
  assert layout.types == base.TASK_TYPES
  np.testing.assert_array_equal(layout.slot, [0, 0, 0, 0, 0, 1, 1, 1])
  assert params["classification"]["classifier"]["kernel"].shape == (2, D, 3)  # [T_cls, d, C_max]
  assert params["regression"]["mean"]["kernel"].shape == (1, D, 1)
  assert params["multiple_choice"]["scorer"]["kernel"].shape == (2, D, 1)
  assert params["span"]["span"]["kernel"].shape == (1, D, 2)
  assert params["tagging"]["tagger"]["kernel"].shape == (2, D, 4)


def test_output_shapes(heads):
  *_, out = heads
  shapes = {k: v.shape for k, v in out.items()}
  assert shapes == {"loss": (B,), "aux_loss": (B,), "cls_logits": (B, 3), "regression": (B,),
                    "regression_log_var": (B,), "choice_logits": (B, K), "start_logits": (B, L),
                    "end_logits": (B, L), "tag_logits": (B, L, 4)}
  assert all(v.dtype == jnp.float32 for v in out.values())


def test_only_present_head_types_are_built():
  tasks = (TaskSpec("a", base.CLASSIFICATION, 2), TaskSpec("b", base.SPAN))
  features = Features(jnp.zeros((2, 1, D)), jnp.zeros((2, L, D)))
  batch = {"task_id": np.array([0, 1]), "label": np.zeros(2, np.int32),
           "start_position": np.zeros(2, np.int32), "end_position": np.zeros(2, np.int32),
           "context_mask": np.zeros((2, L), np.int32)}
  variables = Heads(tasks).init(jax.random.key(0), features, batch)
  assert set(variables["params"]) == {"classification", "span"}
  out = Heads(tasks).apply(variables, features, batch)
  assert set(out) == {"loss", "aux_loss", "cls_logits", "start_logits", "end_logits"}


def test_classification_masking_and_loss(heads):
  _, params, features, batch, out = heads
  logits = np.asarray(out["cls_logits"])
  p = params["classification"]["classifier"]
  for row, slot, classes in ((0, 0, 3), (5, 1, 2), (8, 0, 3)):
    ref = _linear(p, _np(features.pooled[row, 0]), slot)[:classes]
    np.testing.assert_allclose(logits[row, :classes], ref, rtol=1e-5, atol=1e-5)
    assert np.all(logits[row, classes:] == MASK_VALUE)  # padded classes of the 2-class task
    np.testing.assert_allclose(out["loss"][row], -_log_softmax(ref)[batch["label"][row]], rtol=1e-5)
  assert np.all(logits[1] == MASK_VALUE)  # a regression example has no valid class


def test_regression_loss_and_aux_loss(heads):
  _, params, features, batch, out = heads
  x = _np(features.pooled[1, 0])
  mean = _linear(params["regression"]["mean"], x, 0)[0]
  log_var = _linear(params["regression"]["log_var"], x, 0)[0]
  log_var = np.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND)
  np.testing.assert_allclose(out["regression"][1], mean, rtol=1e-5)
  np.testing.assert_allclose(out["regression_log_var"][1], log_var, rtol=1e-5)
  np.testing.assert_allclose(out["loss"][1], (mean - 1.5) ** 2, rtol=1e-5)
  aux = 0.5 * (log_var + (1.5 - mean) ** 2 * np.exp(-log_var))
  np.testing.assert_allclose(out["aux_loss"][1], aux, rtol=1e-5)
  others = TASK_ID != 1
  assert np.all(np.asarray(out["aux_loss"])[others] == 0)
  assert np.all(np.asarray(out["regression"])[others] == 0)


def test_aux_loss_trains_only_the_variance_head(heads):
  module, params, features, batch, _ = heads

  def aux(p, f):
    return module.apply({"params": p}, f, batch)["aux_loss"].sum()
  grads, feature_grads = jax.grad(aux, argnums=(0, 1))(params, features)
  assert np.abs(grads["regression"]["log_var"]["kernel"]).max() > 0
  assert np.all(grads["regression"]["mean"]["kernel"] == 0)
  assert np.all(feature_grads.pooled == 0)  # the shared encoder is not pulled by the aux loss


def test_multiple_choice_valid_choices_and_loss(heads):
  _, params, features, batch, out = heads
  logits = np.asarray(out["choice_logits"])
  p = params["multiple_choice"]["scorer"]
  ref = np.array([_linear(p, _np(features.pooled[2, k]), 0)[0] for k in range(3)])
  np.testing.assert_allclose(logits[2], ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["loss"][2], -_log_softmax(ref)[1], rtol=1e-5)
  # mc2 example (slot 1): choices 0, 1 valid; row 2 is empty and beyond its 2 choices.
  ref2 = np.array([_linear(p, _np(features.pooled[6, k]), 1)[0] for k in range(2)])
  np.testing.assert_allclose(logits[6, :2], ref2, rtol=1e-5, atol=1e-5)
  assert logits[6, 2] == MASK_VALUE
  np.testing.assert_allclose(out["loss"][6], -_log_softmax(ref2)[1], rtol=1e-5)
  assert np.all(logits[0] == MASK_VALUE)  # classification example


def test_span_context_only_with_cls_and_loss(heads):
  _, params, features, batch, out = heads
  start, end = np.asarray(out["start_logits"])[3], np.asarray(out["end_logits"])[3]
  full = _linear(params["span"]["span"], _np(features.hidden[3]), 0)  # [L, 2]
  allowed = np.array([1, 0, 0, 1, 1, 1, 0], bool)  # [CLS] + context 3..5
  np.testing.assert_allclose(start[allowed], full[allowed, 0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(end[allowed], full[allowed, 1], rtol=1e-5, atol=1e-5)
  assert np.all(start[~allowed] == MASK_VALUE) and np.all(end[~allowed] == MASK_VALUE)
  masked = lambda x: np.where(allowed, x, -1e9)  # noqa: E731
  ref = 0.5 * (-_log_softmax(masked(full[:, 0]))[4] - _log_softmax(masked(full[:, 1]))[5])
  np.testing.assert_allclose(out["loss"][3], ref, rtol=1e-5)


def test_tagging_masks_classes_and_unlabelled_subtokens(heads):
  _, params, features, batch, out = heads
  logits = np.asarray(out["tag_logits"])
  p = params["tagging"]["tagger"]
  for row, slot, tags in ((4, 0, 4), (7, 1, 2)):
    full = _linear(p, _np(features.hidden[row]), slot)[:, :tags]  # [L, tags]
    np.testing.assert_allclose(logits[row, :, :tags], full, rtol=1e-5, atol=1e-5)
    assert np.all(logits[row, :, tags:] == MASK_VALUE)
    labels = batch["token_labels"][row]
    labelled = labels >= 0
    ref = -_log_softmax(full)[labelled, labels[labelled]].mean()
    np.testing.assert_allclose(out["loss"][row], ref, rtol=1e-5)
  assert out["loss"][9] == 0  # no labelled token


def test_mixed_batch_equals_single_examples(heads):
  module, params, features, batch, out = heads
  for row in range(B):
    one = jax.tree.map(lambda x: x[row:row + 1], batch)
    f = Features(features.pooled[row:row + 1], features.hidden[row:row + 1])
    single = module.apply({"params": params}, f, one)
    for key, value in single.items():
      np.testing.assert_allclose(value[0], out[key][row], rtol=1e-6, atol=1e-6, err_msg=key)


def test_losses_and_gradients_are_finite_for_every_row(heads):
  module, params, features, batch, out = heads
  assert np.all(np.isfinite(out["loss"])) and np.all(np.isfinite(out["aux_loss"]))
  grads = jax.grad(lambda p: module.apply({"params": p}, features, batch)["loss"].sum())(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_out_of_range_labels_stay_finite(heads):
  """Padding rows (weight 0) are not validated beyond their task id: garbage labels must not turn
  the batch's losses into NaN (jnp gathers fill out-of-range indices with NaN)."""
  module, params, features, batch, _ = heads
  bad = dict(batch, label=np.full(B, 7, np.int32), start_position=np.full(B, 99, np.int32),
             end_position=np.full(B, -3, np.int32), token_labels=np.full((B, L), 9, np.int32))
  out = module.apply({"params": params}, features, bad)
  assert np.all(np.isfinite(out["loss"]))


def test_dropout_only_when_not_deterministic(heads):
  module, params, features, batch, out = heads
  train = module.apply({"params": params}, features, batch, deterministic=False,
                       rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(train["cls_logits"][0], out["cls_logits"][0])
  again = module.apply({"params": params}, features, batch)
  np.testing.assert_array_equal(again["loss"], out["loss"])


def test_task_spec_validation():
  with pytest.raises(ValueError, match="unknown type"):
    TaskSpec("x", "ranking", 2)
  with pytest.raises(ValueError, match="num_labels must be >= 2"):
    TaskSpec("x", base.CLASSIFICATION, 1)
  with pytest.raises(ValueError, match="regression task has num_labels 1"):
    TaskSpec("x", base.REGRESSION, 2)
  with pytest.raises(ValueError, match="unique"):
    HeadLayout.from_tasks((TaskSpec("x", base.SPAN), TaskSpec("x", base.SPAN)))
  task = base.Task("glue/mnli", base.CLASSIFICATION, ("a", "b", "c"), ("accuracy",), {}, None)
  assert TaskSpec.from_task(task) == TaskSpec("glue/mnli", base.CLASSIFICATION, 3)
  copa = base.Task("superglue/copa", base.MULTIPLE_CHOICE, ("0", "1"), ("accuracy",), {}, None,
                   num_choices=2)
  assert TaskSpec.from_task(copa).num_labels == 2
  assert set(HEAD_INPUTS) == set(base.TASK_TYPES)

"""Packing (packing.py, update.py): several candidates per row of max_length tokens, attention
within each candidate, positions and the conditional attention bias by the position within the
candidate. The packed scoring forward must give what the padded one gives: the same
uncertainties (1e-5) and so the same selection; the packed update (packed on the device, run in
chunks of rows) the same loss, per-example losses and gradients (1e-5, dropout off); on real GLUE
candidates and on the demo tasks of every head type."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camtl_jax import evaluate, experiment, mtu, optim, packing, sharding, train, update
from camtl_jax.cli import common
from camtl_jax.models import camtl as camtl_lib

DEMO_TASKS = "demo/sentiment,demo/similarity,demo/entities,demo/choice,demo/span"
GLUE5 = "glue/rte,glue/mrpc,glue/stsb,glue/sst2,glue/cola"


def test_first_fit_decreasing_fills_rows_within_capacity():
  lengths = [60, 10, 70, 5, 0, 33, 64, 128]
  bins = packing.first_fit_decreasing(lengths, 128)
  placed = sorted(i for b in bins for i in b)
  assert placed == [0, 1, 2, 3, 5, 6, 7]  # the empty candidate is left out, the rest once each
  assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
  assert len(bins) == 3  # 128 | 70 + 33 + 10 + 5 | 64 + 60
  with pytest.raises(ValueError, match="129 tokens"):
    packing.first_fit_decreasing([129], 128)


def _candidates(rng, num_tasks=3, b=4, length=16):
  lengths = rng.integers(1, length + 1, (num_tasks, b))
  mask = (np.arange(length) < lengths[..., None]).astype(np.int32)[:, :, None]
  ids = rng.integers(1, 1000, mask.shape).astype(np.int32) * mask
  return {"input_ids": ids, "token_type_ids": (ids % 2) * mask, "attention_mask": mask,
          "task_id": np.repeat(np.arange(num_tasks), b).reshape(num_tasks, b)}


def test_unpack_index_gives_back_every_candidate_token():
  rng = np.random.default_rng(0)
  cands = _candidates(rng)
  needed = packing.rows_needed(cands["attention_mask"][:, :, 0].sum(-1), (0, 2), 16)
  assert packing.pack(cands, (0, 2), needed - 1) is None  # more rows needed than planned
  rows, unpack = packing.pack(cands, (0, 2), needed + 1, process_index=1, process_count=2)
  first = needed + 1  # this host's rows start after host 0's
  mask = cands["attention_mask"][:, :, 0] > 0
  assert np.all(unpack[1] == packing.NO_TOKEN)  # task 1 not packed
  for t in (0, 2):
    local = unpack[t][mask[t]] - first * 16
    assert np.array_equal(rows["input_ids"].reshape(-1)[local],
                          cands["input_ids"][t, :, 0][mask[t]])
    assert np.all(unpack[t][~mask[t]] == packing.NO_TOKEN)
    assert np.all(rows["task_id"].reshape(-1)[local] == t)  # each token under its own task
  # Positions restart at 0 in every segment and count up within it.
  starts = rows["position_ids"] == 0
  assert np.all((rows["segment_ids"] > 0) <= (rows["position_ids"] >= 0))
  assert np.sum(starts & (rows["segment_ids"] > 0)) == mask[[0, 2]].any(-1).sum()
  assert 0 < packing.padding_fraction(rows) < 1


def _run(tmp_path, tasks, *overrides, config="micro"):
  """A Run of `config` (micro: the default tier's random-init model, b = 8 so that 8 devices
  split it; tiny: two real MiniLM layers, for the real-data checks)."""
  batch = ("batch_size=8",) if config == "micro" else ()
  loaded = common.load_config(config, [f"tasks={tasks}", "pack_candidates=True", *batch,
                                       *overrides])
  return experiment.build_run(loaded, tmp_path)


def _selector(run, state, ctx):
  """select(step, packed) -> (indices, H, H_max, regression MSE) as numpy arrays. One jit for
  every step (the step is an argument): the packed and the padded selection compile once each."""
  fn = jax.jit(lambda p, c, f, s, r: train.select(ctx, p, c, f, s, jax.random.key(0),
                                                  state["regression_mse"], r))

  def select(step: int, packed: bool):
    cands = run.loader.candidates(step)
    rows = packing.pack_step(cands, run.pack_plan, packing.host_lengths(
        [s.lengths for s in run.train_splits], run.loader.indices(step), 1)) if packed else None
    if packed:
      assert rows is not None
    else:
      cands.pop("unpack_index", None)
    flat = mtu.flatten_candidates(cands)
    return tuple(np.asarray(x) for x in fn(state["params"], cands, flat, jnp.int32(step), rows))
  return select


def _perturbed(params, scale=0.1):
  """Every conditional module away from its identity at init (a zero attention bias, FiLM
  gamma = beta = 0): otherwise a wrong bias index or row task would go unseen."""
  keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(params))))
  return {group: tree if group == "encoder" else jax.tree.map(
      lambda x: x + scale * jax.random.normal(next(keys), x.shape, x.dtype), tree)
          for group, tree in params.items()}


def _assert_same_outputs(run, apply, params, step):
  """Every output of the model's forward (apply: _packable_forward's jit), packed and padded, at
  the positions that carry one."""
  cands = run.loader.candidates(step)
  rows = packing.pack_step(cands, run.pack_plan, packing.host_lengths(
      [s.lengths for s in run.train_splits], run.loader.indices(step), 1))
  flat = mtu.flatten_candidates(cands)
  mc = np.asarray([run.model.tasks[t].type == "multiple_choice" for t in flat["task_id"]])
  flat = {k: v[~mc] for k, v in flat.items()}  # multiple choice is never packed
  flat = dict(flat, input_ids=flat["input_ids"][:, :1],
              token_type_ids=flat["token_type_ids"][:, :1],
              attention_mask=flat["attention_mask"][:, :1])
  padded = apply(params, {k: v for k, v in flat.items() if k != "unpack_index"}, None)
  packed = apply(params, flat, rows)
  tokens = flat["attention_mask"][:, 0] > 0
  for key, want in padded.items():
    want, got = np.asarray(want), np.asarray(packed[key])
    carried = np.abs(want) < 1e8  # masked logits are -1e9 in both
    if key == "tag_logits":
      carried &= tokens[..., None]
    np.testing.assert_allclose(np.where(carried, got, 0), np.where(carried, want, 0), atol=1e-5,
                               rtol=1e-5, err_msg=key)


def _packable_forward(model):
  """The jitted forward of the head types that pack: apply(params, flat, rows or None)."""
  return jax.jit(lambda p, f, r: model.apply({"params": p}, f, deterministic=True,
                                             head_types=("classification", "regression", "span",
                                                         "tagging"), packed=r))


def _assert_same_selection(run, steps):
  state, compiled = train.compile_run(run)
  state = dict(state, params=_perturbed(state["params"]))
  select, apply = _selector(run, state, compiled.ctx), _packable_forward(run.model)
  for step in steps:
    _assert_same_outputs(run, apply, state["params"], step)
    padded, packed = select(step, packed=False), select(step, packed=True)
    np.testing.assert_array_equal(packed[0], padded[0])
    for got, want in zip(packed[1:], padded[1:]):
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.research
def test_packed_scoring_equals_padded_on_real_glue(shared_data, minilm_path, tmp_path):
  run = _run(tmp_path, GLUE5, f"data_dir={shared_data}", "max_length=128", "batch_size=16",
             config="tiny")
  assert run.loader.candidates(0)["input_ids"].shape[-1] == 128  # one update shape
  rows = run.pack_plan.rows_per_host
  assert rows <= 30, rows  # of 80 candidate rows: GLUE-5's mean lengths are 11-67 of 128
  packed = packing.pack(run.loader.candidates(0), run.pack_plan.tasks, rows)[0]
  tasks_in_row = [len(set(t[s > 0])) for t, s in zip(packed["task_id"], packed["segment_ids"])]
  assert max(tasks_in_row) > 1  # rows mix tasks, so the per-token conditioning is exercised
  _assert_same_selection(run, steps=(0, 1, 2))


def test_packed_scoring_equals_padded_on_every_demo_head_type(tmp_path):
  # Multiple choice is scored padded in its own group; the other four head types packed.
  run = _run(tmp_path, DEMO_TASKS)
  assert run.pack_plan.tasks == (0, 1, 2, 4)
  _assert_same_selection(run, steps=(0, 3))


def test_device_packing_equals_host_first_fit_and_keeps_every_token():
  rng = np.random.default_rng(3)
  cands = _candidates(rng, num_tasks=3, b=6, length=16)
  batch = {k: v.reshape((-1,) + v.shape[2:]) for k, v in cands.items()}  # [18, 1, 16], task-major
  batch["attention_mask"][4] = 0  # an example without tokens gets no row
  rows, unpack, row, used = jax.jit(packing.pack_rows, static_argnums=1)(batch, 20)
  rows, unpack, row = jax.tree.map(np.asarray, (rows, unpack, row))
  lengths = batch["attention_mask"][:, 0].sum(-1)
  want = len(packing.first_fit_decreasing(lengths, 16))
  assert int(used) == want and row[4] == -1 and np.all(unpack[4] == packing.NO_TOKEN)
  assert np.all(rows["segment_ids"][int(used):] == 0)  # rows are opened in order
  for i in range(18):
    n = lengths[i]
    assert np.array_equal(rows["input_ids"].reshape(-1)[unpack[i, :n]],
                          batch["input_ids"][i, 0, :n])
    assert np.array_equal(rows["position_ids"].reshape(-1)[unpack[i, :n]], np.arange(n))
    assert np.all(unpack[i, n:] == packing.NO_TOKEN)
    if n:
      assert np.all(rows["task_id"].reshape(-1)[unpack[i, :n]] == batch["task_id"][i])
      assert len(set(rows["segment_ids"].reshape(-1)[unpack[i, :n]])) == 1
  assert np.bincount(unpack[unpack >= 0]).max() == 1  # no slot holds two tokens


def _no_dropout(model):
  """The model with every dropout rate 0: packed and padded draw different dropout masks."""
  encoder = dataclasses.replace(model.encoder, hidden_dropout=0.0, attention_dropout=0.0)
  return model.clone(encoder=encoder, config=model.config.replace(head_dropout=0.0))


def _assert_same_update(run, steps, chunk_rows=(1, 3, 0)):
  """The packed update (chunks of 1, 3 and the default rows) against the padded one, on the
  batches MT-U selects from the run's candidates: loss, per-example loss, every gradient leaf."""
  state, compiled = train.compile_run(run, model=_no_dropout(run.model))
  params = _perturbed(state["params"])
  ctx = compiled.ctx
  assert ctx.update_chunk_rows > 0  # the default packs the update
  trainable, frozen = optim.split_trainable(params, ctx.labels)
  select = _selector(run, state, ctx)
  # One jit per way of cutting the update, shared by the steps; 0 first: padded.
  fns = {rows: jax.jit(lambda t, b, c=dataclasses.replace(ctx, update_chunk_rows=rows):
                       update.loss_and_grads(c, t, frozen, b, jax.random.key(0)))
         for rows in (0, *(r or ctx.update_chunk_rows for r in chunk_rows))}
  for step in steps:
    idx = select(step, packed=False)[0]
    cands = run.loader.candidates(step)
    batch = {k: v[idx] for k, v in mtu.flatten_candidates(cands).items()}
    results = [jax.tree.map(np.asarray, fn(trainable, batch)) for fn in fns.values()]
    (want_loss, want_grads, want_per_example), counted = results[0], batch["weight"] > 0
    for loss, grads, per_example in results[1:]:
      np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(per_example[counted], want_per_example[counted], rtol=1e-5,
                                 atol=1e-5)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), grads,
                   want_grads)


@pytest.mark.research
def test_packed_update_equals_padded_on_real_glue(shared_data, minilm_path, tmp_path):
  run = _run(tmp_path, GLUE5, f"data_dir={shared_data}", "max_length=128", "batch_size=16",
             config="tiny")
  _assert_same_update(run, steps=(0, 1))


def test_packed_update_equals_padded_on_the_demo_head_types(tmp_path):
  run = _run(tmp_path, "demo/sentiment,demo/similarity,demo/entities,demo/span")
  _assert_same_update(run, steps=(0, 2))


def test_dropout_masks_do_not_depend_on_how_the_update_is_cut(tmp_path):
  """With dropout on, the packed update in chunks of 1 and of the default rows gives one result,
  and the padded update in 1 or 2 micro-batches another: each example's masks are keyed by its
  place in the step's batch (models.bert.RowDropout). The chunk rows are rounded to the device
  count, so this is what lets a checkpoint continue the same run on another number of devices."""
  run = _run(tmp_path, "demo/sentiment,demo/similarity,demo/entities,demo/span")
  state, steps = train.compile_run(run)
  ctx = steps.ctx
  trainable, frozen = optim.split_trainable(_perturbed(state["params"]), ctx.labels)
  idx = _selector(run, state, ctx)(0, packed=False)[0]
  batch = {k: v[idx] for k, v in mtu.flatten_candidates(run.loader.candidates(0)).items()}

  def loss_and_grads(**fields):
    c = dataclasses.replace(ctx, **fields)
    fn = jax.jit(lambda t, b, key: update.loss_and_grads(c, t, frozen, b, key))
    return lambda seed=0: jax.tree.map(np.asarray, fn(trainable, batch, jax.random.key(seed)))

  assert ctx.update_chunk_rows > 1
  packed = [loss_and_grads(update_chunk_rows=r)() for r in (1, ctx.update_chunk_rows)]
  padded_step = loss_and_grads(update_chunk_rows=0, grad_accum_steps=1)
  padded = [padded_step(), loss_and_grads(update_chunk_rows=0, grad_accum_steps=2)()]
  for results in (packed, padded):
    loss, grads, per_example = results[1]
    np.testing.assert_allclose(loss, results[0][0], rtol=1e-5)
    np.testing.assert_allclose(per_example, results[0][2], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads,
                 results[0][1])
  # Dropout is on: another key gives another loss.
  assert abs(padded_step(seed=1)[0] - padded[0][0]) > 1e-4


def test_a_multiple_choice_task_keeps_the_update_padded(tmp_path):
  run = _run(tmp_path, DEMO_TASKS)
  _, steps = train.compile_run(run)
  assert steps.ctx.update_chunk_rows == 0


@pytest.mark.multidevice
def test_packed_train_step_is_one_program_and_equals_padded(tmp_path):
  """The compiled packed step (scoring and update packed) on the mesh (8 devices in the
  multidevice run): one program over several steps, and each step's new state and metrics equal
  the padded step's from the same state (same selection, so the same update; dropout off)."""
  run = _run(tmp_path, "demo/sentiment,demo/similarity,demo/entities,demo/span")
  state, steps = train.compile_run(run, model=_no_dropout(run.model))
  assert steps.ctx.update_chunk_rows % sharding.data_size(run.mesh) == 0
  p_train = train.recompile(steps, update_chunk_rows=0).p_train
  p_packed = steps.p_train
  state = jax.device_put(state, steps.shardings)
  for step in range(3):
    cands = run.loader.candidates(step)
    rows = packing.pack_step(cands, run.pack_plan, packing.host_lengths(
        [s.lengths for s in run.train_splits], run.loader.indices(step), 1))
    padded = {k: v for k, v in cands.items() if k != "unpack_index"}
    copy = jax.tree.map(jnp.copy, state)  # both steps donate their state
    want_state, want = p_train(copy, sharding.global_batch(padded, run.mesh, example_axis=1),
                               None)
    state, got = p_packed(state, sharding.global_batch(cands, run.mesh, example_axis=1),
                          sharding.global_batch(rows, run.mesh, example_axis=0))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), got, want)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), state["params"],
                 want_state["params"])
  assert p_packed._cache_size() == 1  # pylint: disable=protected-access


def test_a_step_that_needs_more_rows_than_planned_is_scored_padded(tmp_path):
  run = _run(tmp_path, "demo/sentiment,demo/span")
  small = dataclasses.replace(run.pack_plan, rows_per_host=1)
  cands = run.loader.candidates(0)
  lengths = packing.host_lengths([s.lengths for s in run.train_splits], run.loader.indices(0), 1)
  assert packing.pack_step(cands, small, lengths) is None and "unpack_index" not in cands
  assert packing.pack_step(cands, run.pack_plan, lengths) is not None
  assert "unpack_index" in cands


def _assert_packed_eval_equals_padded(run, max_examples: int):
  """evaluate.forward_split packed (the default) against padded to bucket lengths, on every dev
  split: the same rows in the same order, every output within 1e-5 at the positions that carry
  one, the same predictions; and the packed evaluation is one program per head group."""
  state, steps = train.compile_run(run)
  params = jax.device_put(_perturbed(state["params"]), steps.shardings["params"])
  assert steps.ctx.eval_chunk_rows > 0  # CPU: the packed rows run in chunks, as in training
  packed_setup = evaluate.eval_setup(run.config, run.model.tasks, run.mesh, batch_size=16)
  assert packed_setup.packed  # the default
  padded_setup = dataclasses.replace(packed_setup, packed=False)
  # The training run's eval program (on the mesh: global batches split over 'data'), one each.
  applies = {setup: train.recompile(steps).p_eval for setup in (packed_setup, padded_setup)}
  for task_id, split in run.dev_splits:
    split = evaluate.capped(split, max_examples)
    (want_rows, want), (got_rows, got) = (
        evaluate.forward_split(applies[s], params, split, task_id, s)
        for s in (padded_setup, packed_setup))
    for want_batch, got_batch, rows in zip(want, got, want_rows):
      for key, value in want_batch.items():
        length = value.shape[1] if key != "cls_logits" and value.ndim > 1 else None
        new = got_batch[key][:, :length] if length else got_batch[key]
        carried = np.abs(value) < 1e8  # masked logits are -1e9 in both
        if key == "tag_logits":
          carried &= (split.arrays["attention_mask"][rows, :length] > 0)[..., None]
        np.testing.assert_allclose(np.where(carried, new, 0), np.where(carried, value, 0),
                                   atol=1e-5, rtol=1e-5, err_msg=f"{split.task.name} {key}")
    assert all(np.array_equal(a, b) for a, b in zip(got_rows, want_rows))
    want_preds, got_preds = (evaluate.predictions(split, r, o)
                             for r, o in ((want_rows, want), (got_rows, got)))
    if split.task.type == "regression":
      np.testing.assert_allclose(got_preds, want_preds, atol=1e-4)
    else:
      assert got_preds == want_preds, split.task.name
  groups = {camtl_lib.choice_layout(run.model.tasks, t.type) for t in run.tasks}  # head groups
  assert applies[packed_setup]._cache_size() == len(groups)  # pylint: disable=protected-access
  assert applies[padded_setup]._cache_size() > len(groups)  # pylint: disable=protected-access


@pytest.mark.multidevice
def test_packed_eval_equals_padded_on_every_demo_head_type(tmp_path):
  # Multiple choice is evaluated padded at max_length; the other four head types packed.
  _assert_packed_eval_equals_padded(_run(tmp_path, DEMO_TASKS), max_examples=40)


@pytest.mark.research
def test_packed_eval_equals_padded_on_real_glue(shared_data, minilm_path, tmp_path):
  run = _run(tmp_path, GLUE5, f"data_dir={shared_data}", "max_length=128", "batch_size=16",
             config="tiny")
  _assert_packed_eval_equals_padded(run, max_examples=64)

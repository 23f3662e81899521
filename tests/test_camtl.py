"""The CA-MTL model on the micro model and the real MiniLM checkpoint: identity at init, task
conditioning, mixed batches, heads inside the model, sharding, bfloat16, the parameter tree and
report, bad input."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from camtl_jax import convert, experiment, optim
from camtl_jax.cli import params as cli_params
from camtl_jax.models import bert, camtl
from camtl_jax.models.camtl import CAMTL, CAMTLConfig, TaskSpec
from camtl_jax.tasks import base

TOL = 1e-5
TASKS = (
    TaskSpec("cls", base.CLASSIFICATION, 3),
    TaskSpec("reg", base.REGRESSION, 1),
    TaskSpec("mc", base.MULTIPLE_CHOICE, 2),
    TaskSpec("span", base.SPAN),
    TaskSpec("tag", base.TAGGING, 5),
    TaskSpec("cls2", base.CLASSIFICATION, 2),
)
PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("Short.", "x"),
    ("Paris is the capital of France.", "Berlin is in Germany."),
    ("Multi-task learning shares one encoder across tasks.", "Does it help?"),
    ("one", "two"),
    ("Padding must not change the real tokens' outputs.", "Indeed."),
    ("A longer first segment, with punctuation; and numbers like 1234.", "And a second one."),
    ("Last example of the batch.", "End."),
]
# Every component on, then the variants DESIGN names: the skip chain, FiLM alignment.
ALL_ON = CAMTLConfig(alignment="matrix", cond_attention=True, cond_layernorm=True, adapter="top",
                     max_length=64)
VARIANTS = {
    "all_on_top_adapter": ALL_ON,
    "skip_adapter": ALL_ON.replace(adapter="skip"),
    "film_alignment": ALL_ON.replace(alignment="film", adapter="none"),
}
# One component at a time, for the task-dependence tests.
ONLY = {
    "alignment": CAMTLConfig(alignment="matrix", cond_attention=False, cond_layernorm=False,
                             adapter="none", max_length=64),
    "attention": CAMTLConfig(alignment="none", cond_attention=True, cond_layernorm=False,
                             adapter="none", max_length=64),
    "layernorm": CAMTLConfig(alignment="none", cond_attention=False, cond_layernorm=True,
                             adapter="none", max_length=64),
    "adapter": CAMTLConfig(alignment="none", cond_attention=False, cond_layernorm=False,
                           adapter="top", max_length=64),
}

GLUE_SPECS = experiment.task_specs(experiment.get_tasks(experiment.GLUE_TASKS))


# Written for MiniLM's shapes and scale (6 layers, 512 positions, hidden 384; conditioning effects
# sized against its activations): these run on the real checkpoint only (integration).
MINILM_ONLY = ("test_forward_outputs_and_gradients", "test_encoder_subtree_is_exactly_bert_encoder",
               "test_config_outside_the_model_fails_at_build",
               "test_each_component_conditions_on_the_task_and_mixing_is_exact")


@pytest.fixture(autouse=True)
def _minilm_only(request):
  if request.node.originalname in MINILM_ONLY and "[micro" in request.node.name:
    pytest.skip("expectations written for MiniLM's shapes; run with -m integration")


@pytest.fixture(scope="module",
                params=["micro", pytest.param("minilm", marks=pytest.mark.integration)])
def checkpoint(request):
  """(encoder config, pretrained params, a mixed batch, the plain encoder's outputs) of the micro
  model (default tier) and of the real MiniLM checkpoint (integration)."""
  path = experiment.resolve_model_path("micro") if request.param == "micro" else (
      request.getfixturevalue("minilm_path"))
  config, params = convert.load_pretrained(path)
  tokenizer = convert.load_tokenizer(path)
  first, second = zip(*PAIRS)
  enc = tokenizer(list(first), list(second), padding=True, return_tensors="np")
  batch = camtl.example_batch(TASKS, batch_size=len(PAIRS), length=enc["input_ids"].shape[1])
  assert batch["input_ids"].shape[1] == 2  # K = 2 for the MC task
  for key in ("input_ids", "token_type_ids", "attention_mask"):
    rows = np.zeros_like(batch[key])
    rows[:, 0] = enc[key]
    rows[:, 1] = enc[key][::-1]  # a second choice row for the MC task (others ignore it)
    batch[key] = rows
  batch["task_id"] = np.zeros(len(PAIRS), np.int32)
  plain = jax.jit(lambda p, ids, types, mask: bert.Encoder(config).apply({"params": p}, ids, types,
                                                                         mask))
  ref = plain(params, enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
  return config, params, batch, ref


@pytest.fixture(scope="module")
def superset_params(checkpoint):
  """init_params of a config whose parameters include those of every config below (the skip chain
  covers the top adapter's layer, the matrix alignment the FiLM one); each test takes its subset, so
  the model is initialised (compiled) once."""
  encoder, pretrained, batch, _ = checkpoint
  model = CAMTL(encoder, ALL_ON.replace(adapter="skip"), TASKS)
  return camtl.init_params(model, jax.random.key(0), pretrained, batch)


@functools.lru_cache(maxsize=None)
def _encode_fn(encoder, config):
  model = CAMTL(encoder, config, TASKS)
  return model, jax.jit(functools.partial(camtl.encode, model))


def _params_for(config, checkpoint, superset):
  """The superset's parameters that `config`'s model has (same paths, same shapes)."""
  encoder, _, batch, _ = checkpoint
  model, _ = _encode_fn(encoder, config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), batch)["params"]
  shapes = traverse_util.flatten_dict(shapes)
  full = traverse_util.flatten_dict(superset)
  assert all(full[k].shape == v.shape for k, v in shapes.items())
  return traverse_util.unflatten_dict({k: full[k] for k in shapes})


def _perturb(params, scale=0.5, seed=1):
  """Noise on every conditional parameter (the zero-initialised ones included)."""
  out = dict(params)
  for group in set(params) - {"encoder", "heads"}:
    leaves, tree = jax.tree.flatten(params[group])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out[group] = jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) / np.sqrt(
        x.shape[0]) for k, x in zip(keys, leaves)])
  return out


def _real_max_diff(a, b, mask):
  diff = np.asarray(a, np.float32) - np.asarray(b, np.float32)
  return float(np.abs(diff * mask[..., None]).max())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_identity_at_init_equals_pretrained_encoder(checkpoint, superset_params, variant):
  encoder, pretrained, batch, (ref_hidden, ref_pooled) = checkpoint
  config = VARIANTS[variant]
  params = _params_for(config, checkpoint, superset_params)
  _, encode = _encode_fn(encoder, config)
  mixed = dict(batch, task_id=np.arange(len(PAIRS), dtype=np.int32) % len(TASKS))
  hidden, pooled = encode(params, mixed)
  mask = batch["attention_mask"][:, 0]
  assert _real_max_diff(hidden[:, 0], ref_hidden, mask) <= TOL
  assert float(np.abs(pooled[:, 0] - ref_pooled).max()) <= TOL


def test_plain_mtl_baseline_has_only_encoder_and_heads(checkpoint, superset_params):
  encoder, pretrained, batch, (ref_hidden, ref_pooled) = checkpoint
  config = CAMTLConfig(conditioning="none", max_length=64)
  params = _params_for(config, checkpoint, superset_params)
  assert set(params) == {"encoder", "heads"}
  hidden, pooled = _encode_fn(encoder, config)[1](params, batch)
  assert _real_max_diff(hidden[:, 0], ref_hidden, batch["attention_mask"][:, 0]) <= TOL


@pytest.mark.parametrize("component", sorted(ONLY))
def test_each_component_conditions_on_the_task_and_mixing_is_exact(checkpoint, superset_params,
                                                                    component):
  encoder, pretrained, batch, _ = checkpoint
  config = ONLY[component]
  params = _perturb(_params_for(config, checkpoint, superset_params))
  _, encode = _encode_fn(encoder, config)
  mask = batch["attention_mask"][:, 0]
  single = {t: encode(params, dict(batch, task_id=np.full(len(PAIRS), t, np.int32)))
            for t in (0, 1)}
  # Different tasks, same input: different outputs.
  assert _real_max_diff(single[0][0][:, 0], single[1][0][:, 0], mask) > 1e-2
  # A mixed batch: each example equals its output in a single-task batch.
  task_id = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int32)
  hidden, pooled = encode(params, dict(batch, task_id=task_id))
  for t in (0, 1):
    rows = task_id == t
    assert _real_max_diff(hidden[rows, 0], single[t][0][rows, 0], mask[rows]) <= TOL
    assert float(np.abs(pooled[rows] - single[t][1][rows]).max()) <= TOL


@pytest.mark.parametrize("config", [ONLY["adapter"].replace(adapter="skip"),
                                    ONLY["alignment"].replace(alignment="film")],
                         ids=["skip_adapter", "film_alignment"])
def test_skip_adapter_and_film_alignment_condition_on_the_task(checkpoint, superset_params, config):
  encoder, pretrained, batch, _ = checkpoint
  mask = batch["attention_mask"][:, 0]
  params = _perturb(_params_for(config, checkpoint, superset_params))
  _, encode = _encode_fn(encoder, config)
  out = [encode(params, dict(batch, task_id=np.full(len(PAIRS), t, np.int32)))[0] for t in (0, 1)]
  assert _real_max_diff(out[0][:, 0], out[1][:, 0], mask) > 1e-2


def test_multiple_choice_rows_use_the_example_task(checkpoint, superset_params):
  """The task id repeats over an example's choice rows: choice k of an MC example equals the same
  text encoded as another choice row of the same example."""
  encoder, pretrained, batch, _ = checkpoint
  params = _perturb(_params_for(ALL_ON, checkpoint, superset_params))
  _, encode = _encode_fn(encoder, ALL_ON)
  task_id = np.array([2, 0, 2, 1, 2, 3, 4, 5], np.int32)
  hidden, pooled = encode(params, dict(batch, task_id=task_id))
  swapped = dict(batch, task_id=task_id)
  for key in ("input_ids", "token_type_ids", "attention_mask"):
    swapped[key] = batch[key][:, ::-1]
  hidden2, pooled2 = encode(params, swapped)
  np.testing.assert_allclose(pooled[:, 1], pooled2[:, 0], atol=TOL)
  np.testing.assert_allclose(pooled[:, 0], pooled2[:, 1], atol=TOL)


def _labelled(batch):
  """The fixture batch with a task of every head type and valid labels."""
  task_id = np.array([0, 1, 2, 3, 4, 5, 0, 2], np.int32)
  length = batch["input_ids"].shape[-1]
  context = np.zeros((len(task_id), length), np.int32)
  context[3, 5:9] = 1
  tags = np.full((len(task_id), length), -1, np.int32)
  tags[4, 1:4] = [0, 4, 2]
  return dict(batch, task_id=task_id, label=np.array([2, 0, 1, 0, 0, 1, 1, 0], np.int32),
              target=np.array([0, -0.7, 0, 0, 0, 0, 0, 0], np.float32),
              start_position=np.array([0, 0, 0, 6, 0, 0, 0, 0], np.int32),
              end_position=np.array([0, 0, 0, 7, 0, 0, 0, 0], np.int32),
              context_mask=context, token_labels=tags)


@pytest.fixture(scope="module")
def full_model(checkpoint, superset_params):
  encoder, pretrained, batch, _ = checkpoint
  model = CAMTL(encoder, ALL_ON, TASKS)
  batch = _labelled(batch)
  camtl.validate_batch(batch, TASKS)
  init = _params_for(ALL_ON, checkpoint, superset_params)
  params = _perturb(init)
  return model, params, batch, jax.jit(model.apply)({"params": params}, batch), init


def test_forward_outputs_and_gradients(full_model):
  model, params, batch, out, init = full_model
  b, k, length = batch["input_ids"].shape
  assert {key: v.shape for key, v in out.items()} == {
      "loss": (b,), "aux_loss": (b,), "cls_logits": (b, 3), "regression": (b,),
      "regression_log_var": (b,), "choice_logits": (b, k), "start_logits": (b, length),
      "end_logits": (b, length), "tag_logits": (b, length, 5)}
  assert np.all(np.isfinite(out["loss"])) and np.all(np.asarray(out["loss"]) > 0)
  # Per-example loss picked from the example's own head: a classification row's loss is its CE.
  logits = np.asarray(out["cls_logits"][0], np.float64)
  ce = np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[2]
  np.testing.assert_allclose(out["loss"][0], ce, rtol=1e-5)

  @jax.jit
  def grad(p):
    def loss(p):
      o = model.apply({"params": p}, batch, deterministic=False,
                      rngs={"dropout": jax.random.key(0)})
      return jnp.mean(o["loss"] + o["aux_loss"])
    return jax.grad(loss)(p)
  grads = grad(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  for group in ("task_embedding", "alignment", "cond_attention", "cond_layernorm", "adapter"):
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads[group])) > 0, group
  # At init, the zero-initialised kernels (FiLM, W, W_up) get gradients too.
  grads = grad(init)
  for path in (("alignment", "delta"), ("alignment", "film", "dense", "kernel"),
               ("cond_attention", "layer_0", "blocks"),
               ("cond_attention", "layer_0", "film", "dense", "kernel"),
               ("cond_layernorm", "layer_5", "output_LayerNorm", "dense", "kernel"),
               ("adapter", "layer_5", "up", "kernel")):
    g = functools.reduce(lambda t, key: t[key], path, grads)
    assert float(np.abs(g).max()) > 0, path


HEAD_OUTPUTS = {base.CLASSIFICATION: ("cls_logits",), base.REGRESSION: ("regression",
                                                                        "regression_log_var"),
                base.MULTIPLE_CHOICE: ("choice_logits",), base.SPAN: ("start_logits",
                                                                      "end_logits"),
                base.TAGGING: ("tag_logits",)}


def test_choice_layout_batches_equal_the_full_batch(full_model):
  """Non-multiple-choice examples encoded with K = 1 and only their heads (choice_layout, as the
  scoring forward and evaluation run them), and multiple-choice examples with only their head,
  give the full model's outputs on the K-row batch."""
  model, params, batch, out, _ = full_model
  is_mc = np.array([TASKS[t].type == base.MULTIPLE_CHOICE for t in batch["task_id"]])
  for rows, task_type in ((np.flatnonzero(~is_mc), base.CLASSIFICATION),
                          (np.flatnonzero(is_mc), base.MULTIPLE_CHOICE)):
    k, head_types = camtl.choice_layout(TASKS, task_type)
    part = {key: np.asarray(v)[rows] for key, v in batch.items()}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
      part[key] = part[key][:, :k]
    got = jax.jit(lambda p, b, h=head_types: model.apply({"params": p}, b, head_types=h))(
        params, part)
    assert set(got) == {"loss", "aux_loss"} | {key for key in out if any(
        key in HEAD_OUTPUTS[t] for t in head_types)}
    for key, value in got.items():
      np.testing.assert_allclose(value, np.asarray(out[key])[rows], atol=TOL, err_msg=key)
  assert camtl.choice_layout(TASKS, base.SPAN) == (1, (base.CLASSIFICATION, base.REGRESSION,
                                                       base.SPAN, base.TAGGING))
  with pytest.raises(ValueError, match="K=1 choice rows"):  # K = 1 with the choice head: refused
    model.apply({"params": params}, part | {key: part[key][:, :1] for key in (
        "input_ids", "token_type_ids", "attention_mask")}, head_types=(base.MULTIPLE_CHOICE,))


@pytest.mark.multidevice
def test_batch_sharded_over_data_axis_equals_unsharded(full_model):
  model, params, batch, out, _ = full_model
  mesh = Mesh(np.array(jax.devices()), ("data",))
  data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  fn = jax.jit(lambda p, b: model.apply({"params": p}, b), in_shardings=(replicated, data),
               out_shardings=data)
  sharded = fn(jax.device_put(params, replicated), jax.device_put(batch, data))
  assert len(sharded["loss"].sharding.device_set) == jax.device_count()
  for key in out:
    np.testing.assert_allclose(sharded[key], out[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_bfloat16_compute_runs_and_stays_close(checkpoint, full_model):
  encoder = checkpoint[0]
  _, params, batch, out, _ = full_model
  model16 = CAMTL(encoder.replace(dtype="bfloat16"), ALL_ON, TASKS)
  out16, state = jax.jit(functools.partial(model16.apply, mutable=["intermediates"]))(
      {"params": params}, batch)
  hidden16, _ = state["intermediates"]["encoder_output"][0]
  assert hidden16.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in out16.values())  # heads and losses in float32
  # bert's bf16 test sees pooled outputs within 1e-2 of float32; logits and losses are Linear maps
  # and CEs of those, with |kernel| ~ 0.02 per entry.
  np.testing.assert_allclose(out16["cls_logits"][0], out["cls_logits"][0], atol=0.05)
  np.testing.assert_allclose(out16["loss"], out["loss"], rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------
# Parameter tree and report


def test_encoder_subtree_is_exactly_bert_encoder(checkpoint, full_model):
  _, pretrained, _, _ = checkpoint
  _, params, _, _, _ = full_model
  shapes = lambda t: jax.tree.map(np.shape, t)  # noqa: E731
  assert shapes(params["encoder"]) == shapes(pretrained)
  assert set(params) == {"encoder", "task_embedding", "alignment", "cond_attention",
                         "cond_layernorm", "adapter", "heads"}
  assert set(params["cond_attention"]) == {f"layer_{i}" for i in range(6)}
  assert set(params["cond_layernorm"]) == {"layer_3", "layer_4", "layer_5"}
  assert set(params["adapter"]) == {"task_transform", "layer_5"}
  # The one freeze rule (optim.freeze_labels), as the optimizer and the parameter report use it.
  assert optim.default_is_pretrained(("encoder", "layer_0", "attention", "query", "kernel"))
  assert not optim.default_is_pretrained(("cond_attention", "layer_0", "blocks"))
  flat = traverse_util.flatten_dict(optim.freeze_labels(params, (0, 3)))
  labels_under = lambda *prefix: {l for p, l in flat.items() if p[:len(prefix)] == prefix}  # noqa
  assert labels_under("encoder", "embeddings", "word_embeddings") == {optim.FROZEN}
  assert labels_under("encoder", "layer_2") == {optim.FROZEN}
  assert labels_under("encoder", "layer_3") == {optim.TRAINABLE}
  assert labels_under("encoder", "pooler") == {optim.TRAINABLE}
  assert labels_under("cond_attention", "layer_0") == {optim.TRAINABLE}
  keyed = jax.tree_util.tree_flatten_with_path(params["heads"])[0][0][0]
  assert not optim.default_is_pretrained(optim.path_of(keyed))


def test_init_params_rejects_a_mismatched_checkpoint(checkpoint):
  encoder, pretrained, batch, _ = checkpoint
  model = CAMTL(encoder, ALL_ON, TASKS)
  broken = dict(pretrained, pooler={"dense": {"kernel": np.zeros((3, 3), np.float32),
                                              "bias": np.zeros(3, np.float32)}})
  with pytest.raises(ValueError, match="pooler/dense/kernel"):
    camtl.init_params(model, jax.random.key(0), broken, batch)


def test_parameter_report_bert_base_8_glue_tasks():
  encoder = bert.EncoderConfig()  # BERT-base shape
  config = camtl.default_config("base")
  report = experiment.parameter_report(CAMTL(encoder, config, GLUE_SPECS))
  d, n, t = 768, 12, 8
  film = lambda k: d * 2 * k + 2 * k  # noqa: E731
  blocks, c = 6, 22  # N = 768 // 128, c = ceil(128 / 6)
  expected_new = (
      t * d + d * d + d                                    # task embedding + transform
      + film(d) + d * d                                    # alignment: FiLM + R
      + n * (blocks * c * c + film(c))                     # conditional attention, all layers
      + (n // 2) * 2 * film(d)                             # conditional LN, upper layers
      + (d * d + d) + film(d) + (d * (d // 3) + d // 3) + ((d // 3) * d + d)  # top adapter
      + 7 * d * 3 + 7 * 3 + 2 * (d + 1))                   # 7 classification heads, 1 regression
  assert report["pretrained"] == report["plain_encoder"] == 109_482_240
  assert report["new"] == expected_new
  embeddings = (30522 + 512 + 2) * d + 2 * d
  layer = 4 * (d * d + d) + 2 * (d * 3072) + 3072 + d + 4 * d
  assert report["frozen"] == embeddings + (n // 2) * layer
  assert report["trainable"] == report["total"] - report["frozen"]
  assert report["ratio"] == pytest.approx(report["total"] / 109_482_240)
  text = experiment.format_parameter_report(report)
  assert "1.175x" in text and "cond_layernorm" in text


def test_params_cli_prints_the_report(capsys, minilm_path):
  assert cli_params.main(["--model", str(minilm_path)]) == 0
  out = capsys.readouterr().out
  assert "6 layers, d=384" in out and "frozen" in out


# ---------------------------------------------------------------------------------------------
# Config


def test_config_from_config_dict_and_defaults():
  cd = ml_collections.ConfigDict({"adapter": "skip", "cond_attention_layers": [0, 2],
                                  "frozen_layers": [0, 4]})
  config = CAMTLConfig.from_config(cd)
  assert config.adapter == "skip" and config.cond_attention_layers == (0, 2)
  assert config.frozen_layers == (0, 4)
  assert CAMTLConfig.from_config(config.to_config()) == config
  assert camtl.default_config("base").adapter == "top"
  assert camtl.default_config("large").adapter == "skip"
  with pytest.raises(ValueError, match="unknown CA-MTL model config field"):
    CAMTLConfig.from_config({"adaptor": "top"})
  with pytest.raises(ValueError, match="alignment must be one of"):
    CAMTLConfig(alignment="matrices")
  with pytest.raises(ValueError, match="size must be one of"):
    camtl.default_config("huge")


def test_resolved_layers():
  config = camtl.default_config("base")
  assert config.attention_layer_ids(12) == tuple(range(12))
  assert config.layernorm_layer_ids(12) == tuple(range(6, 12))
  assert config.adapter_layer_ids(12) == (11,)
  assert camtl.default_config("large").adapter_layer_ids(24) == tuple(range(12, 24))
  assert optim.frozen_range(config.frozen_layers, 12) == range(0, 6)  # the one freeze rule
  none = config.replace(conditioning="none")
  assert none.attention_layer_ids(12) == none.layernorm_layer_ids(12) == ()
  assert none.adapter_layer_ids(12) == ()


def test_frozen_range_outside_the_model_is_refused():
  # The model does not freeze anything (the optimizer does): the range is checked once, by the
  # rule the optimizer, the parameter report and experiment.check_config share.
  with pytest.raises(ValueError, match=r"frozen_layers=\(0, 9\) is outside the encoder's 6 layers"):
    optim.frozen_range((0, 9), 6)


@pytest.mark.parametrize("changes,message", [
    ({"cond_attention_layers": (0, 6)}, r"cond_attention_layers asks for layers \[6\].*6 layers"),
    ({"cond_layernorm_layers": (7,)}, r"cond_layernorm_layers asks for layers \[7\].*6 layers"),
    ({"adapter_layers": 7}, r"adapter_layers=7 exceeds.*6 layers"),
    ({"max_length": 1000}, r"max_length=1000 exceeds the encoder's 512 positions"),
])
def test_config_outside_the_model_fails_at_build(checkpoint, changes, message):
  encoder = checkpoint[0]
  with pytest.raises(ValueError, match=message):
    CAMTL(encoder, camtl.default_config("base").replace(**changes), TASKS)


# ---------------------------------------------------------------------------------------------
# Bad batches


def _expect(batch, field, row, match=""):
  with pytest.raises(ValueError, match=rf"'{field}': row {row}: .*{match}"):
    camtl.validate_batch(batch, TASKS)


def test_validate_batch_names_field_and_row(full_model):
  _, _, batch, _, _ = full_model
  camtl.validate_batch(batch, TASKS)
  _expect(dict(batch, task_id=np.array([0, 1, 2, 3, 9, 5, 0, 2], np.int32)), "task_id", 4,
          "the run has 6 tasks")
  _expect(dict(batch, label=np.array([3, 0, 1, 0, 0, 1, 1, 0], np.int32)), "label", 0,
          r"out of range \[0, 3\) for task 'cls'")
  _expect(dict(batch, label=np.array([2, 0, 1, 0, 0, 2, 1, 0], np.int32)), "label", 5,
          r"\[0, 2\) for task 'cls2'")
  empty = batch["attention_mask"].copy()
  empty[2, 1] = 0
  _expect(dict(batch, attention_mask=empty), "label", 2, "has no tokens")
  _expect(dict(batch, target=np.array([0, np.nan, 0, 0, 0, 0, 0, 0], np.float32)), "target", 1)
  _expect(dict(batch, start_position=np.array([0, 0, 0, 2, 0, 0, 0, 0], np.int32)),
          "start_position", 3, "neither")
  _expect(dict(batch, end_position=np.array([0, 0, 0, 99, 0, 0, 0, 0], np.int32)),
          "end_position", 3, "outside")
  tags = batch["token_labels"].copy()
  tags[4, 2] = 5
  _expect(dict(batch, token_labels=tags), "token_labels", 4, r"tags \[5\] out of range")
  # A padding row (weight 0) may be empty and carry any label, but not an unknown task id.
  padded = dict(batch, weight=np.array([1, 1, 1, 1, 1, 1, 1, 0], np.float32),
                label=np.array([2, 0, 1, 0, 0, 1, 1, 7], np.int32))
  padded["attention_mask"] = batch["attention_mask"].copy()
  padded["attention_mask"][7] = 0
  camtl.validate_batch(padded, TASKS)
  _expect(dict(padded, task_id=np.array([0, 1, 2, 3, 4, 5, 0, -1], np.int32)), "task_id", 7)


def test_static_batch_errors_at_trace_time(full_model):
  model, params, batch, _, _ = full_model
  apply = jax.jit(model.apply)
  with pytest.raises(ValueError, match=r"missing key\(s\) \['token_labels'\]"):
    apply({"params": params}, {k: v for k, v in batch.items() if k != "token_labels"})
  long = camtl.example_batch(TASKS, batch_size=2, length=65)
  with pytest.raises(ValueError, match="length 65 exceeds the model's maximum 64"):
    apply({"params": params}, long)
  one_row = {k: (v[:, :1] if v.ndim == 3 else v) for k, v in batch.items()}
  with pytest.raises(ValueError, match="K=1 choice rows but a multiple-choice task has 2"):
    apply({"params": params}, one_row)
  with pytest.raises(ValueError, match=r"batch\['label'\] has shape"):
    apply({"params": params}, dict(batch, label=batch["label"][:3]))

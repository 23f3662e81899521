"""The Flax encoder equals HF's PyTorch BertModel / RobertaModel; conversion and its errors."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from camtl_jax import convert
from camtl_jax.cli import convert as cli_convert
from camtl_jax.models import bert
from camtl_jax.models.bert import Encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
# bfloat16 compute (params float32, softmax/LayerNorm in float32) vs float32 on MiniLM, measured on
# real tokens: hidden states are O(1..6); observed max abs diff 0.041 (hidden), 0.0016 (pooled).
BF16_HIDDEN_TOL = 0.1
BF16_POOLED_TOL = 0.01

SENTENCES = [
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("Short.", "x"),
    ("A considerably longer first segment, with punctuation; numbers like 1234 and rare words "
     "such as floccinaucinihilipilification.",
     "And a second segment that is also not short at all."),
    ("Paris is the capital of France.", "Berlin is in Germany."),
    ("one", "two"),
    ("Multi-task learning shares one encoder across tasks.", "Does it help?"),
    ("Padding must not change the real tokens' outputs.", "Indeed."),
    ("Last example of the batch.", "End."),
]


def _batch(tokenizer, n=8):
  first, second = zip(*SENTENCES[:n])
  enc = tokenizer(list(first), list(second), padding=True, return_tensors="np")
  if "token_type_ids" not in enc:
    enc["token_type_ids"] = np.zeros_like(enc["input_ids"])
  return {k: enc[k].astype(np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}


def _hf_outputs(hf_model, batch):
  hf_model.eval()
  with torch.no_grad():
    out = hf_model(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
  return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _assert_parity(ours, theirs, mask, tol=TOL):
  """Compares real-token hidden states and the pooled output.

  Padding positions are excluded: nothing reads them, and on PAD-token activations float32 rounding
  alone gives differences of a few 1e-5 between two correct implementations.
  """
  hidden, pooled = (np.asarray(x, np.float32) for x in ours)
  ref_hidden, ref_pooled = theirs
  assert hidden.shape == ref_hidden.shape and pooled.shape == ref_pooled.shape
  hidden_err = np.abs((hidden - ref_hidden) * mask[..., None]).max()
  pooled_err = np.abs(pooled - ref_pooled).max()
  assert hidden_err <= tol and pooled_err <= tol, (hidden_err, pooled_err)


def _apply(config, params, batch, jit=False):
  fn = lambda p, b: Encoder(config).apply({"params": p}, b["input_ids"], b["token_type_ids"],
                                           b["attention_mask"])
  return (jax.jit(fn) if jit else fn)(params, batch)


@pytest.fixture(scope="module")
def minilm(minilm_path):
  config, params = convert.load_pretrained(minilm_path)
  tokenizer = convert.load_tokenizer(minilm_path)
  hf = transformers.BertModel.from_pretrained(str(minilm_path), attn_implementation="eager")
  batch = _batch(tokenizer)
  return config, params, batch, _hf_outputs(hf, batch)


def test_minilm_parity_eager_and_jit(minilm):
  config, params, batch, ref = minilm
  assert len(set(batch["attention_mask"].sum(1))) > 3, "the batch must mix lengths (padding)"
  _assert_parity(_apply(config, params, batch), ref, batch["attention_mask"])
  _assert_parity(_apply(config, params, batch, jit=True), ref, batch["attention_mask"])


@pytest.mark.multidevice
def test_minilm_parity_batch_sharded_over_data(minilm):
  config, params, batch, ref = minilm
  mesh = Mesh(np.array(jax.devices()), ("data",))
  data = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  sharded_batch = jax.device_put(batch, data)
  params = jax.device_put(params, replicated)
  fn = jax.jit(lambda p, b: Encoder(config).apply({"params": p}, b["input_ids"],
                                                   b["token_type_ids"], b["attention_mask"]),
               in_shardings=(replicated, data), out_shardings=(data, data))
  out = fn(params, sharded_batch)
  assert out[0].sharding.spec == P("data")
  assert len(out[0].sharding.device_set) == jax.device_count()
  _assert_parity(out, ref, batch["attention_mask"])


def test_bfloat16_compute_within_documented_tolerance(minilm):
  config, params, batch, _ = minilm
  hidden32, pooled32 = _apply(config, params, batch, jit=True)
  hidden16, pooled16 = _apply(config.replace(dtype="bfloat16"), params, batch, jit=True)
  assert hidden16.dtype == jnp.bfloat16
  mask = batch["attention_mask"][..., None]
  hidden_err = np.abs((np.asarray(hidden16, np.float32) - np.asarray(hidden32)) * mask).max()
  pooled_err = np.abs(np.asarray(pooled16, np.float32) - np.asarray(pooled32)).max()
  assert hidden_err < BF16_HIDDEN_TOL and pooled_err < BF16_POOLED_TOL, (hidden_err, pooled_err)


# ------------------------------------------------------------------------------------------------
# SelfAttention against a float64 reference: the bias shapes CA-MTL passes, dropout on the probs.


def _attention_case(seed=0, b=3, l=7, d=32, heads=4):
  config = bert.EncoderConfig(hidden_size=d, num_heads=heads, attention_dropout=0.25)
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(b, l, d)).astype(np.float32)
  mask = (np.arange(l)[None] < np.array([l, 3, 5])[:, None]).astype(np.int32)
  module = bert.SelfAttention(config)
  params = module.init(jax.random.PRNGKey(seed), h, bert.padding_bias(mask))["params"]
  params = jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(np.float32) * 0.1, params)
  return config, module, params, h, mask, rng


def _reference_probs(params, h, bias, heads):
  """float64 softmax(q k^T / sqrt(Dh) + bias) [B, H, L, L] and v [B, H, L, Dh]."""
  b, l, d = h.shape
  proj = lambda name: (np.asarray(h, np.float64) @ np.asarray(params[name]["kernel"], np.float64)
                       + np.asarray(params[name]["bias"], np.float64)
                       ).reshape(b, l, heads, d // heads).transpose(0, 2, 1, 3)
  q, k, v = proj("query"), proj("key"), proj("value")
  bias = np.asarray(bias, np.float64)
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads) + (bias[:, None] if bias.ndim == 3
                                                                 else bias)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  return probs / probs.sum(-1, keepdims=True), v


def _merge_heads(context):  # [B, H, L, Dh] -> [B, L, d]
  b, heads, l, dh = context.shape
  return context.transpose(0, 2, 1, 3).reshape(b, l, heads * dh)


@pytest.mark.parametrize("bias_kind", ["padding", "conditional", "conditional_4d"])
def test_self_attention_matches_reference_for_each_bias_shape(bias_kind):
  config, module, params, h, mask, rng = _attention_case()
  bias = np.asarray(bert.padding_bias(mask))  # [B, 1, L]
  if bias_kind != "padding":  # padding + a per-example conditional bias [B, L, L], as CA-MTL adds
    bias = bias + rng.normal(size=(h.shape[0], h.shape[1], h.shape[1])).astype(np.float32)
  if bias_kind == "conditional_4d":
    bias = bias[:, None]  # [B, 1, L, L]
  probs, v = _reference_probs(params, h, bias, config.num_heads)
  ref = _merge_heads(probs @ v)
  for fn in (module.apply, jax.jit(module.apply)):
    out = np.asarray(fn({"params": params}, h, bias))
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_self_attention_dropout_acts_on_the_probabilities():
  config, module, params, h, mask, rng = _attention_case(seed=1)
  bias = bert.padding_bias(mask) + rng.normal(size=(3, 7, 7)).astype(np.float32)
  out, state = module.apply({"params": params}, h, bias, False, rngs={"dropout": jax.random.key(0)},
                            capture_intermediates=True)
  # The dropout acts on the unnormalised weights exp(x - max x) (the softmax is normalised after
  # the second matmul): each row is the probabilities times one constant, and the output is the
  # dropped-out probabilities times v, as HF's dropout on the probabilities.
  dropped = np.asarray(state["intermediates"]["RowDropout_0"]["__call__"][0], np.float64)
  probs, v = _reference_probs(params, h, bias, config.num_heads)
  assert dropped.shape == probs.shape  # [B, H, L, L]
  kept = dropped != 0
  assert 0 < kept.mean() < 1
  keep = 1 - config.attention_dropout
  row_scale = np.where(kept, dropped / np.where(kept, probs, 1.0), np.nan)
  np.testing.assert_allclose(row_scale, np.nanmax(row_scale, axis=-1, keepdims=True)
                             * np.where(kept, 1.0, np.nan), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out), _merge_heads((probs * kept / keep) @ v), atol=1e-5,
                             rtol=0)
  again = module.apply({"params": params}, h, bias, False, rngs={"dropout": jax.random.key(0)})
  np.testing.assert_array_equal(np.asarray(again), np.asarray(out))


def _random_hf_model(tmp_path, cls, config_cls, safe_serialization=True, **shape):
  torch.manual_seed(0)
  hf = cls(config_cls(**shape), add_pooling_layer=True).eval()
  # Random init leaves LayerNorm at (1, 0); perturb so conversion mistakes in LN would show.
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if "LayerNorm" in name:
        p.add_(0.1 * torch.randn_like(p))
  hf.save_pretrained(tmp_path, safe_serialization=safe_serialization)
  return hf


def test_bert_large_shape_parity(tmp_path, minilm_path):
  # BERT-large width and heads (d=1024, 16 heads, FFN 4096); depth shrunk to keep the suite fast.
  hf = _random_hf_model(tmp_path, transformers.BertModel, transformers.BertConfig,
                        hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
                        num_hidden_layers=2, vocab_size=30522, max_position_embeddings=512)
  config, params = convert.load_pretrained(tmp_path)
  assert (config.hidden_size, config.num_heads, config.num_layers) == (1024, 16, 2)
  batch = _batch(convert.load_tokenizer(minilm_path))
  _assert_parity(_apply(config, params, batch, jit=True), _hf_outputs(hf, batch),
                 batch["attention_mask"])


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "pytorch_bin"])
def test_roberta_parity(tmp_path, safe_serialization):
  hf = _random_hf_model(tmp_path, transformers.RobertaModel, transformers.RobertaConfig,
                        safe_serialization=safe_serialization, hidden_size=768,
                        num_attention_heads=12, intermediate_size=3072, num_hidden_layers=2,
                        vocab_size=1000, max_position_embeddings=130, type_vocab_size=1,
                        pad_token_id=1)
  config, params = convert.load_pretrained(tmp_path)
  assert config.model_type == "roberta" and config.pad_token_id == 1
  rng = np.random.default_rng(0)
  lengths = np.array([20, 3, 17, 9, 5, 14, 11, 2])
  ids = rng.integers(3, 1000, size=(8, 20)).astype(np.int32)
  mask = (np.arange(20)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask > 0, ids, 1)  # RoBERTa's pad id is 1; positions count only non-pad tokens.
  batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}
  _assert_parity(_apply(config, params, batch, jit=True), _hf_outputs(hf, batch), mask)


def test_convert_cli_round_trip(tmp_path, minilm_path):
  out = tmp_path / "minilm"
  assert cli_convert.main([str(minilm_path), str(out)]) == 0
  assert (out / "tokenizer" / "tokenizer.json").exists()
  config, params = convert.load_pretrained(out)
  ref_config, ref_params = convert.load_pretrained(minilm_path)
  assert config == ref_config
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  assert convert.load_tokenizer(out)("hello")["input_ids"] == [101, 7592, 102]
  assert cli_convert.main([str(minilm_path), str(out)]) == 2  # refuses to overwrite


# ------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file and the key; nothing half-written in OUT.


@pytest.fixture
def minilm_copy(tmp_path, minilm_path):
  src = tmp_path / "src"
  shutil.copytree(minilm_path, src)
  return src


def _assert_convert_fails(src, out, *fragments):
  with pytest.raises(convert.CheckpointError) as err:
    convert.convert(src, out)
  for fragment in fragments:
    assert fragment in str(err.value), str(err.value)
  assert not out.exists()
  assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


def test_missing_directory(tmp_path):
  _assert_convert_fails(tmp_path / "nope" / "model", tmp_path / "out", "no such model directory")


def test_missing_weights_file(minilm_copy, tmp_path):
  (minilm_copy / "model.safetensors").unlink()
  _assert_convert_fails(minilm_copy, tmp_path / "out", str(minilm_copy), "model.safetensors",
                        "pytorch_model.bin")


def test_unknown_model_type(minilm_copy, tmp_path):
  cfg = json.loads((minilm_copy / "config.json").read_text())
  cfg["model_type"] = "gpt2"
  (minilm_copy / "config.json").write_text(json.dumps(cfg))
  _assert_convert_fails(minilm_copy, tmp_path / "out", "config.json", "gpt2")


def _rewrite_weights(src, edit):
  from safetensors.numpy import load_file, save_file
  weights = load_file(str(src / "model.safetensors"))
  edit(weights)
  save_file(weights, str(src / "model.safetensors"))


def test_missing_key(minilm_copy, tmp_path):
  _rewrite_weights(minilm_copy, lambda w: w.pop("encoder.layer.3.intermediate.dense.weight"))
  _assert_convert_fails(minilm_copy, tmp_path / "out", "model.safetensors",
                        "encoder.layer.3.intermediate.dense.weight")


def test_wrong_shape(minilm_copy, tmp_path):
  def edit(w):
    w["encoder.layer.2.attention.self.key.weight"] = np.zeros((384, 100), np.float32)
  _rewrite_weights(minilm_copy, edit)
  _assert_convert_fails(minilm_copy, tmp_path / "out", "model.safetensors",
                        "encoder.layer.2.attention.self.key.weight", "(384, 100)", "(384, 384)")


def test_offline_hub_name_names_local_alternative(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.chdir(tmp_path)
  with pytest.raises(convert.CheckpointError, match="local model directory"):
    convert.resolve_source("bert-base-uncased")

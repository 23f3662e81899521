"""HuggingFace BERT/RoBERTa checkpoint -> (EncoderConfig, Flax params); console script
`camtl-convert`.

    camtl-convert HF_DIR_OR_HUB_NAME OUT_DIR

OUT_DIR then holds `encoder_config.json`, `params/` (an Orbax checkpoint of the Flax param tree)
and `tokenizer/` (the fast tokenizer files), and `load_pretrained(OUT_DIR)` reads it back. OUT_DIR
is written to a temporary sibling and renamed at the end, so a failure leaves nothing half-written.

safetensors files are read with numpy (no torch); pytorch_model.bin needs torch.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from camtl_jax.models.bert import EncoderConfig

log = logging.getLogger(__name__)

SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json")
# Files that make a directory a tokenizer directory (BERT / RoBERTa / sentencepiece families).
TOKENIZER_MARKERS = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                     "sentencepiece.bpe.model", "tokenizer.model")
CONVERTED_CONFIG = "encoder_config.json"
# Prefixes of task-model checkpoints (BertForSequenceClassification, RobertaForMaskedLM, ...).
KNOWN_PREFIXES = ("bert.", "roberta.")


class CheckpointError(ValueError):
  """A checkpoint that cannot be converted; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# Config


def encoder_config_from_hf(config_path: Path) -> EncoderConfig:
  """Reads an HF config.json into an EncoderConfig."""
  try:
    hf = json.loads(config_path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{config_path}: cannot read the model config: {e}") from e
  model_type = hf.get("model_type")
  if model_type not in ("bert", "roberta"):
    raise CheckpointError(
        f"{config_path}: unknown model_type {model_type!r}; camtl_jax converts 'bert' and "
        "'roberta' (BERT, RoBERTa, MiniLM and other BertModel/RobertaModel checkpoints)")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise CheckpointError(f"{config_path}: position_embedding_type "
                          f"{hf['position_embedding_type']!r} is not supported (only 'absolute')")
  return EncoderConfig(
      model_type=model_type, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      intermediate_size=hf["intermediate_size"],
      max_position_embeddings=hf["max_position_embeddings"],
      type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
      pad_token_id=hf.get("pad_token_id", 0) or 0, hidden_act=hf.get("hidden_act", "gelu"),
      hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout=hf.get("attention_probs_dropout_prob", 0.1))


# ---------------------------------------------------------------------------------------------
# Weights


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  try:
    return load_file(str(path))
  except Exception as e:  # safetensors raises its own error types
    raise CheckpointError(f"{path}: cannot read safetensors weights: {e}") from e


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise CheckpointError(
        f"{path}: reading pytorch_model.bin needs torch, which is not installed. Install the CPU "
        "build (pip install torch==2.13.0 or pip install 'camtl_jax[torch]'), or convert the "
        "checkpoint to model.safetensors") from e
  try:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:
    raise CheckpointError(f"{path}: cannot read torch weights: {e}") from e
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_hf_weights(model_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
  """Returns (weights file, {hf key without the bert./roberta. prefix: array})."""
  readers: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
      SAFETENSORS: _read_safetensors, TORCH_BIN: _read_torch_bin}
  for name, reader in readers.items():
    path = model_dir / name
    if path.exists():
      raw = reader(path)
      break
  else:
    raise CheckpointError(f"{model_dir}: no weights file: expected {SAFETENSORS} or {TORCH_BIN}")
  weights = {}
  for key, value in raw.items():
    for prefix in KNOWN_PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix):]
        break
    # Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
    key = (key.replace("LayerNorm.gamma", "LayerNorm.weight")
           .replace("LayerNorm.beta", "LayerNorm.bias"))
    weights[key] = value
  return path, weights


def _conversion_table(config: EncoderConfig) -> dict[tuple[str, ...], tuple[str, bool]]:
  """Flax param path -> (HF key, transpose?). Dense kernels are transposed (torch stores
  [out, in])."""
  table: dict[tuple[str, ...], tuple[str, bool]] = {}

  def dense(flax_path: tuple[str, ...], hf: str):
    table[flax_path + ("kernel",)] = (f"{hf}.weight", True)
    table[flax_path + ("bias",)] = (f"{hf}.bias", False)

  def layer_norm(flax_path: tuple[str, ...], hf: str):
    table[flax_path + ("scale",)] = (f"{hf}.weight", False)
    table[flax_path + ("bias",)] = (f"{hf}.bias", False)

  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    table[("embeddings", name, "embedding")] = (f"embeddings.{name}.weight", False)
  layer_norm(("embeddings", "LayerNorm"), "embeddings.LayerNorm")
  for i in range(config.num_layers):
    ours, hf = f"layer_{i}", f"encoder.layer.{i}"
    for proj in ("query", "key", "value"):
      dense((ours, "attention", proj), f"{hf}.attention.self.{proj}")
    dense((ours, "attention_output"), f"{hf}.attention.output.dense")
    layer_norm((ours, "attention_LayerNorm"), f"{hf}.attention.output.LayerNorm")
    dense((ours, "intermediate"), f"{hf}.intermediate.dense")
    dense((ours, "output"), f"{hf}.output.dense")
    layer_norm((ours, "output_LayerNorm"), f"{hf}.output.LayerNorm")
  dense(("pooler", "dense"), "pooler.dense")
  return table


def expected_shapes(config: EncoderConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flax param path -> shape, from the model itself (no weights are allocated)."""
  from flax import traverse_util
  from camtl_jax.models.bert import Encoder
  ids = jax.ShapeDtypeStruct((1, 8), np.int32)
  shapes = jax.eval_shape(lambda i: Encoder(config).init(jax.random.key(0), i, i, i), ids)
  return {k: v.shape for k, v in traverse_util.flatten_dict(shapes["params"]).items()}


def convert_weights(config: EncoderConfig, weights: dict[str, np.ndarray], source: Path,
                    seed: int = 0) -> dict[str, Any]:
  """HF weights -> nested Flax param dict (float32 numpy). Errors name `source` and the HF key.

  A checkpoint without a pooler (e.g. RobertaForMaskedLM) gets a freshly initialised pooler, as HF
  does, with a warning: every other missing key is an error.
  """
  from flax import traverse_util
  shapes = expected_shapes(config)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  rng = np.random.default_rng(seed)
  for path, (key, transpose) in _conversion_table(config).items():
    want = shapes[path]
    if key not in weights:
      if path[0] == "pooler":
        log.warning("%s has no %s: initialising the pooler randomly (as HF does)", source, key)
        flat[path] = (rng.normal(0, 0.02, want) if path[-1] == "kernel" else np.zeros(want)).astype(
            np.float32)
        continue
      raise CheckpointError(f"{source}: missing key '{key}' (needed for {'/'.join(path)})")
    value = np.asarray(weights[key], dtype=np.float32)
    if transpose:
      value = value.T
    if value.shape != want:
      found = value.T.shape if transpose else value.shape
      raise CheckpointError(f"{source}: key '{key}' has shape {tuple(found)}, expected "
                            f"{tuple(want[::-1]) if transpose else tuple(want)} for this config")
    flat[path] = np.ascontiguousarray(value)
  return traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------------------------------------
# Sources: HF directory, hub name, converted directory


def resolve_source(src: str | os.PathLike) -> Path:
  """A local directory as is; otherwise a hub name fetched with huggingface_hub (online only)."""
  path = Path(src).expanduser()
  if path.is_dir():
    return path
  if path.exists():
    raise CheckpointError(f"{path}: is a file; expected a model directory with config.json and "
                          f"{SAFETENSORS} or {TORCH_BIN}")
  name = str(src)
  looks_like_hub_name = name.count("/") <= 1 and not name.startswith((".", "/", "~"))
  if not looks_like_hub_name:
    raise CheckpointError(f"{path}: no such model directory")
  try:
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(name, allow_patterns=[
        "config.json", SAFETENSORS, TORCH_BIN, *TOKENIZER_FILES]))
  except Exception as e:
    raise CheckpointError(
        f"{name}: not a local directory, and fetching it from the HuggingFace hub failed "
        f"({type(e).__name__}: {e}). Offline, pass a local model directory instead (one holding "
        f"config.json and {SAFETENSORS} or {TORCH_BIN}, e.g. made with save_pretrained)") from e


def load_hf(model_dir: Path) -> tuple[EncoderConfig, dict[str, Any]]:
  """Reads an HF model directory (config.json + weights) -> (config, params)."""
  if not model_dir.is_dir():
    raise CheckpointError(f"{model_dir}: no such model directory")
  config_path = model_dir / "config.json"
  if not config_path.exists():
    raise CheckpointError(f"{model_dir}: no config.json in the model directory")
  config = encoder_config_from_hf(config_path)
  source, weights = read_hf_weights(model_dir)
  return config, convert_weights(config, weights, source)


def is_converted(path: Path) -> bool:
  return (path / CONVERTED_CONFIG).exists() and (path / "params").is_dir()


def load_converted(path: Path) -> tuple[EncoderConfig, dict[str, Any]]:
  """Reads a directory written by `convert()`."""
  import orbax.checkpoint as ocp
  config = EncoderConfig(**json.loads((path / CONVERTED_CONFIG).read_text()))
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore((path / "params").resolve())
  params = jax.tree.map(np.asarray, params)
  return config, params


def load_pretrained(src: str | os.PathLike) -> tuple[EncoderConfig, dict[str, Any]]:
  """(EncoderConfig, float32 numpy params) from a converted dir, an HF dir or a hub name."""
  path = resolve_source(src)
  return load_converted(path) if is_converted(path) else load_hf(path)


def tokenizer_dir(src: str | os.PathLike) -> Path:
  """Where the fast tokenizer of a converted or HF model directory lives."""
  path = resolve_source(src)
  return path / "tokenizer" if is_converted(path) else path


def _named_fast_tokenizer_class(path: Path):
  """The fast class of the tokenizer_class that tokenizer_config.json names (BertTokenizer ->
  transformers.BertTokenizerFast), the class AutoTokenizer would pick; None when the file names
  none. Importing that class alone skips AutoTokenizer's import of every model config and of
  PyTorch: 1.1 s of each command's start (2.2 s against 1.1 s on the 2-core machine)."""
  import transformers  # pylint: disable=import-outside-toplevel
  config = path / "tokenizer_config.json"
  name = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
  if not name:
    return None
  return getattr(transformers, name if name.endswith("Fast") else name + "Fast", None)


def load_tokenizer(src: str | os.PathLike):
  """The HF fast tokenizer stored with a checkpoint: a converted dir (its tokenizer/), an HF model
  or tokenizer directory, or a hub name (online only). The one tokenizer loader: training,
  prediction, export and the data command all load through it.

  Offsets (span tasks) and word ids (tagging) need a fast tokenizer, so a slow one is refused.
  """
  path = tokenizer_dir(src)
  if not any((path / f).exists() for f in TOKENIZER_MARKERS):
    raise FileNotFoundError(
        f"{path} has no tokenizer files (looked for {', '.join(TOKENIZER_MARKERS)}); pass the "
        "checkpoint directory that holds the tokenizer (e.g. the HF model directory).")
  tokenizer_class = _named_fast_tokenizer_class(path)
  if tokenizer_class is None:
    from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
    tokenizer_class = AutoTokenizer
  tokenizer = tokenizer_class.from_pretrained(path, use_fast=True, local_files_only=True)
  if not tokenizer.is_fast:
    raise ValueError(f"{path}: a fast (Rust) tokenizer is required for offsets and word ids.")
  return tokenizer


def convert(src: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False
            ) -> tuple[EncoderConfig, dict[str, Any]]:
  """Converts SRC (HF dir or hub name) and writes OUT_DIR atomically. Returns (config, params).
  An existing, non-empty OUT_DIR is refused unless overwrite (then replaced once the new one is
  written)."""
  import orbax.checkpoint as ocp
  out = Path(out_dir).expanduser().resolve()
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise CheckpointError(f"{out}: output directory exists and is not empty (overwrite=True "
                          "replaces it)")
  model_dir = resolve_source(src)
  config, params = load_hf(model_dir)  # all validation happens before anything is written
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
  try:
    (tmp / CONVERTED_CONFIG).write_text(json.dumps(config.__dict__, indent=2))
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(tmp / "params", params)
    (tmp / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
      if (model_dir / name).exists():
        shutil.copy2(model_dir / name, tmp / "tokenizer" / name)
    if out.exists() and overwrite:
      shutil.rmtree(out)
    elif out.exists():
      out.rmdir()  # empty
    tmp.rename(out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return config, params

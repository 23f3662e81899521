"""The `micro` model: a random-init 2-layer encoder with a word-level tokenizer, built here.

`model_path = "micro"` (configs/micro.py) resolves to a model directory in the format
`camtl-convert` writes (encoder_config.json, params/, tokenizer/), generated on first use:
  - the tokenizer is a BERT WordPiece tokenizer whose vocabulary is every word of the demo suite
    (so demo text is one token per word) plus single characters and their '##' continuations
    (so any other text still tokenizes, character by character);
  - the encoder is bert.Encoder initialised from a fixed seed (hidden 32, 2 layers, 2 heads).
It needs no download and no pretrained weights, so the default test tier runs the whole engine
(readers, tokenizer, packing, the compiled step, checkpoints) in seconds. It learns nothing a
pretrained encoder knows; claims about learning use the real checkpoint (the research tier).

The directory is a deterministic function of MICRO_VERSION and the demo generator, written once
into a cache folder (CAMTL_MICRO_DIR, else ~/.cache/camtl_jax) by a temporary sibling and a
rename, so concurrent test workers never see a half-written model.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import string
import tempfile
from pathlib import Path

import jax
import numpy as np

from camtl_jax.models import bert

MICRO_VERSION = 4  # bump when the vocabulary or the shape changes
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SHAPE = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
             max_position_embeddings=128, hidden_dropout=0.1, attention_dropout=0.1)
_DEMO_SEED = 0
# Common English words beside the demo's, so that short everyday test sentences stay short.
COMMON_WORDS = (
    "the", "a", "an", "is", "are", "was", "were", "be", "been", "of", "and", "or", "to", "in", "on",
    "at", "by", "for", "with", "from", "as", "it", "its", "this", "that", "these", "one", "two",
    "not", "no", "yes", "do", "does", "did", "has", "have", "had", "will", "can", "must", "may",
    "like", "just", "some", "all", "any", "each", "more", "most", "other", "than", "then", "there",
    "here", "what", "which", "who", "when", "where", "why", "how", "i", "you", "he", "she", "we",
    "they", "me", "him", "her", "us", "them", "my", "your", "his", "our", "their", "cat", "dog",
    "mat", "sat", "sitting", "capital", "france", "germany", "short", "long", "longer", "first",
    "second", "last", "end", "example", "batch", "task", "tasks", "learning", "multi", "shares",
    "encoder", "across", "help", "padding", "change", "real", "tokens", "outputs", "indeed",
    "segment", "punctuation", "numbers", "text", "word", "words", "sentence", "question", "answer")


def micro_dir() -> Path:
  """Where the micro model lives (built on first use)."""
  root = Path(os.environ.get("CAMTL_MICRO_DIR", Path.home() / ".cache" / "camtl_jax"))
  return root / f"micro_v{MICRO_VERSION}"


def ensure_micro_model() -> Path:
  """The micro model directory, written if missing. Returns its path."""
  path = micro_dir()
  if (path / "encoder_config.json").exists():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
  try:
    _write(tmp)
    try:
      tmp.rename(path)
    except OSError:  # another process finished first: its directory is the same bytes
      shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def vocabulary() -> list[str]:
  """Special tokens, the demo suite's words (lowercased, BERT's punctuation split), then
  single characters and their '##' continuations."""
  from camtl_jax.tasks import demo  # pylint: disable=import-outside-toplevel
  words = set(COMMON_WORDS)
  for name in demo.DEMO_TASK_NAMES:
    for split in ("train", "dev", "test"):
      for row in demo.generate_rows(name, split, _DEMO_SEED):
        words.update(_words(json.dumps(row, ensure_ascii=False)))
  chars = string.ascii_lowercase + string.digits + string.punctuation
  pieces = sorted(words - set(chars) - set(SPECIAL_TOKENS))
  return [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), *pieces]


def _words(text: str) -> set[str]:
  """Lowercased words and punctuation marks, as BERT's basic tokenizer splits them."""
  return set(re.findall(r"\w+|[^\w\s]", text.lower()))


def _write(out: Path) -> None:
  from transformers import BertTokenizerFast  # pylint: disable=import-outside-toplevel
  vocab = vocabulary()
  (out / "tokenizer").mkdir()
  BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)},
                    do_lower_case=True).save_pretrained(out / "tokenizer")
  config = bert.EncoderConfig(vocab_size=len(vocab), **SHAPE)
  ids = np.zeros((1, 8), np.int32)
  params = bert.Encoder(config).init(jax.random.key(MICRO_VERSION), ids, ids, ids)["params"]
  params = jax.tree.map(np.asarray, params)
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save((out / "params").resolve(), params)
  (out / "encoder_config.json").write_text(json.dumps(config.__dict__, indent=2))

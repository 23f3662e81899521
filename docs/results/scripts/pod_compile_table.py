"""The pod table of docs/results/pod_compile.md from camtl-compile(-tpu) --json reports.

  python docs/results/scripts/pod_compile_table.py OUT.json REPORT.json ...

Per report: topology, config (model, tasks, sampler), global batch and gradient accumulation, the
cost model's step time, examples/s per chip, utilisation (XLA's flops per chip / step time / the
chip's dense bf16 peak, aot.CHIPS) and XLA's memory per chip against HBM. Writes the rows to
OUT.json and prints them as a markdown table.
"""
import json
import sys
from pathlib import Path

GIB = 2 ** 30
PEAKS = {"v4": 275e12, "v5e": 197e12, "v5p": 459e12, "v6e": 918e12}  # aot.CHIPS peak_flops


def row(path: Path) -> dict:
  r = json.loads(path.read_text())
  chip = r["topology"].partition(":")[0]
  seconds = r.get("cost_model_seconds")
  flops = r.get("cost_per_chip", {}).get("flops")
  out = {
      "report": path.name, "topology": r["topology"], "chips": r["chips"],
      "model": r["encoder"]["model_path"], "dtype": r["encoder"]["dtype"], "tasks": r["tasks"],
      "sampler": r["sampler"], "fsdp": r["fsdp"], "global_batch": r["global_batch"],
      "candidates": r["candidates"], "fits": r["fits"],
      "memory_per_chip_gib": r.get("memory_per_chip", {}).get("total", 0) / GIB,
      "hbm_per_chip_gib": r["hbm_per_chip"] / GIB,
  }
  if seconds and flops:
    out.update(step_ms=1e3 * seconds, tflop_per_chip=flops / 1e12,
               examples_per_s_per_chip=r["global_batch"] / seconds / r["chips"],
               utilisation=flops / seconds / PEAKS[chip])
  return out


def main(argv):
  rows = [row(Path(p)) for p in argv[1:]]
  Path(argv[0]).write_text(json.dumps(rows, indent=2))
  print("| topology | config | global batch (per chip) | step (cost model) | examples/s per chip "
        "| utilisation | memory per chip |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    per_chip = r["global_batch"] / r["chips"]
    config = f"{r['model']}, {r['tasks']} tasks, {r['dtype']}{', FSDP' if r['fsdp'] else ''}"
    if "step_ms" not in r:
      print(f"| {r['topology']} | {config} | {r['global_batch']} ({per_chip:g}) | - | - | - | "
            f"{'does not fit' if not r['fits'] else '-'} |")
      continue
    print(f"| {r['topology']} | {config} | {r['global_batch']} ({per_chip:g}) | "
          f"{r['step_ms']:.1f} ms | {r['examples_per_s_per_chip']:,.0f} | "
          f"{100 * r['utilisation']:.0f}% | {r['memory_per_chip_gib']:.2f} / "
          f"{r['hbm_per_chip_gib']:.0f} GiB |")


if __name__ == "__main__":
  main(sys.argv[1:])

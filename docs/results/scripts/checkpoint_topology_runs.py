"""Runs of docs/results/checkpoint_topology.md: python THIS A|B ROOT, from the repository root.
A: 1 device to step 4, then its step-2 checkpoint continued on 8; B: 8 devices, then 8 -> 1."""
import json, sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.test_checkpoint_topology import _run_jobs, _job
root = Path(sys.argv[2])
which = sys.argv[1]
chains = {"A": [(1, [_job(root, "one1")]), (8, [_job(root, "one1_to_8", resume_from="one1")])],
          "B": [(8, [_job(root, "dp8")]), (1, [_job(root, "dp8_to_1", resume_from="dp8")])]}
for devices, jobs in chains[which]:
  out = _run_jobs(devices, jobs)
  for name, r in out.items():
    (root / f"result_{name}.json").write_text(json.dumps(r, indent=2))
    print("done", name, flush=True)

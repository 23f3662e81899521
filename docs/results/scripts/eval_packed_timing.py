# The dev evaluation of a GLUE-5 run, packed (the default) against padded to bucket lengths:
# programs compiled, seconds of the first pass (compiles included) and of later passes, in turn.
# python docs/results/scripts/eval_packed_timing.py DATA_DIR MAX_EXAMPLES ROUNDS
import dataclasses, pathlib, sys, tempfile, time
import jax
from camtl_jax import evaluate, experiment, train
from camtl_jax.cli import common

data_dir, max_examples, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = common.load_config("glue5_minilm", [f"data_dir={data_dir}"])
run = experiment.build_run(config, pathlib.Path(tempfile.mkdtemp()))
state, steps = train.compile_run(run)
params = jax.device_put(state["params"], steps.shardings["params"])
packed = evaluate.eval_setup(config, run.model.tasks, run.mesh)
setups = {"packed": packed, "padded": dataclasses.replace(packed, packed=False)}
applies = {name: train.recompile(steps).p_eval for name in setups}  # a program cache each
seconds = {name: [] for name in setups}
scores = {}
for _ in range(rounds):
  for name, setup in setups.items():
    start = time.perf_counter()
    results, scores[name] = evaluate.evaluate(applies[name], params, run.tasks, run.dev_splits,
                                              setup, max_examples)
    seconds[name].append(time.perf_counter() - start)
for name in setups:
  print(f"{name}: programs {applies[name]._cache_size()}, first pass {seconds[name][0]:.1f} s, "
        f"later passes {[round(s, 1) for s in seconds[name][1:]]} s, mean dev score {scores[name]:.6f}")

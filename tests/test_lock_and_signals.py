"""workdir.py's WorkdirLock (two runs never share a workdir) and StopSignals (SIGTERM and a first
Ctrl-C save and stop the run, which then exits 130 / 143)."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from camtl_jax import workdir


def _records(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.name == workdir.__name__]


# ------------------------------------------------------------------------------------------------
# WorkdirLock

HOLD_LOCK = """
import sys, time
from camtl_jax.workdir import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _write_lock(workdir, host, pid):
  (workdir / ".lock").write_text(json.dumps({"host": host, "pid": pid, "started": "earlier"}))


@pytest.mark.integration  # a subprocess holds the lock
def test_lock_of_a_live_run_refuses_then_is_taken_over_once_it_died(tmp_path, caplog):
  path = tmp_path.resolve()
  proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], text=True,
                          stdout=subprocess.PIPE, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.WorkdirLocked) as e:
      workdir.WorkdirLock(path).acquire()
    message = str(e.value)
    assert str(path) in message and "another run" in message
    assert f"host {socket.gethostname()}, pid {proc.pid}," in message
  finally:
    proc.kill()
    proc.wait()  # reaped: a zombie still counts as alive
  with caplog.at_level(logging.WARNING, logger=workdir.__name__):
    with workdir.WorkdirLock(path) as lock:
      record = json.loads(lock.path.read_text())
      assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
      assert set(record) == {"host", "pid", "started"}
  [warning] = _records(caplog)
  assert f"of pid {proc.pid} " in warning and "no longer running" in warning
  assert not (path / ".lock").exists()


@pytest.mark.integration  # a subprocess gives a dead pid
def test_lock_of_a_dead_pid_is_taken_over(tmp_path, caplog):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  _write_lock(tmp_path, socket.gethostname(), int(dead.stdout))
  lock = workdir.WorkdirLock(tmp_path)
  with caplog.at_level(logging.WARNING, logger=workdir.__name__):
    lock.acquire()
  assert lock.held and json.loads(lock.path.read_text())["pid"] == os.getpid()
  assert len(_records(caplog)) == 1
  lock.release()
  assert not lock.path.exists() and not lock.held


def test_lock_from_another_host_or_unreadable_counts_as_live(tmp_path):
  _write_lock(tmp_path, "elsewhere.example", 1)
  with pytest.raises(workdir.WorkdirLocked) as e:
    workdir.WorkdirLock(tmp_path).acquire()
  message = str(e.value)
  assert "host elsewhere.example, pid 1," in message
  assert f"If that run is gone, delete {tmp_path / '.lock'}." in message
  (tmp_path / ".lock").write_text("")  # a run between creating and writing it
  with pytest.raises(workdir.WorkdirLocked, match="unreadable"):
    workdir.WorkdirLock(tmp_path).acquire()


def test_lock_is_exclusive_within_a_process_and_release_keeps_others_locks(tmp_path):
  with workdir.WorkdirLock(tmp_path):
    with pytest.raises(workdir.WorkdirLocked, match=f"pid {os.getpid()},"):
      workdir.WorkdirLock(tmp_path).acquire()
  lock = workdir.WorkdirLock(tmp_path).acquire()
  _write_lock(tmp_path, "elsewhere.example", 1)  # someone took it over meanwhile
  lock.release()
  assert (tmp_path / ".lock").exists()


# ------------------------------------------------------------------------------------------------
# StopSignals and the exit status of a stopped run


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_first_signal_asks_the_loop_to_stop_and_sets_the_exit_status(sig, status, caplog):
  before = signal.getsignal(signal.SIGTERM)
  signals = workdir.StopSignals(enabled=True)
  try:
    with caplog.at_level(logging.WARNING, logger=workdir.__name__):
      os.kill(os.getpid(), sig)  # the handler runs in the main thread before the next line
    assert signals.requested and signals.exit_status == status
    assert f"{sig.name}: saving and stopping after this step" in _records(caplog)[0]
    # Only an interactive Ctrl-C can be pressed again.
    assert ("Ctrl-C again" in _records(caplog)[0]) == (sig == signal.SIGINT)
  finally:
    signals.restore()
  assert signal.getsignal(signal.SIGTERM) is before


def _camtl_train(monkeypatch, tmp_path, error) -> int:
  """camtl-train in-process on the micro config, its training replaced by raising `error`."""
  from camtl_jax import main, train

  def stop(config, path):
    del config, path
    raise error
  monkeypatch.setattr(train, "train_and_evaluate", stop)
  return main.main(["--config", "micro", "--workdir", str(tmp_path / "run")])


@pytest.mark.parametrize("status", [130, 143])
def test_a_run_stopped_by_a_signal_exits_non_zero_and_says_how_to_resume(
    status, monkeypatch, tmp_path, capsys):
  from camtl_jax import train
  code = _camtl_train(monkeypatch, tmp_path, train.Interrupted(5, tmp_path / "run", status))
  err = capsys.readouterr().err
  assert code == status
  assert f"camtl-train: stopped at step 5; rerun the same command to resume from {tmp_path}" in err


def test_a_nan_stop_is_one_error_line_with_exit_2(monkeypatch, tmp_path, capsys):
  from camtl_jax import train
  code = _camtl_train(monkeypatch, tmp_path, train.TrainingStopped(
      "5 consecutive steps had a NaN/Inf loss or gradient (step 5); stopped with a checkpoint"))
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err
  assert [line for line in err.splitlines() if "error" in line] == [
      "camtl-train: error: 5 consecutive steps had a NaN/Inf loss or gradient (step 5); stopped "
      "with a checkpoint"]


@pytest.mark.integration  # in process, but two micro runs that compile: minutes on 2 cores
def test_a_run_of_nan_steps_stops_with_one_error_line_keeps_its_checkpoint_and_reruns_so(
    tmp_path, capsys):
  """learning_rate 1e30: every update overflows, so every step is skipped as NaN/Inf."""
  from camtl_jax import checkpoint, main
  # One classification task: the NaN handling is under test, not the task mix.
  args = ["--config", "micro", "--workdir", str(tmp_path / "run"), "--config.learning_rate=1e30",
          "--config.max_bad_steps=2", "--config.tasks=('demo/sentiment',)"]
  for _ in range(2):  # the run, then a rerun on its workdir
    assert main.main(args) == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert line.startswith("camtl-train: error: ") and "NaN/Inf" in line, err[-2000:]
    assert "Traceback" not in err
    assert checkpoint.ranked_steps(tmp_path / "run") == [2]  # kept, not moved or removed

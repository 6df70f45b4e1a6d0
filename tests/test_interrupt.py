"""SIGINT / SIGTERM during a run: every algorithm file stops at its next safe point, saves model.pt
marked interrupted, keeps metrics.csv and the TensorBoard file, says where everything is and exits with 128 + the
signal number, without a traceback. One real CLI run gets SIGINT in a subprocess; to stay cheap, every file's main()
also runs in this process, where a thread sends the signal once the Logger (and so its handlers) exists. Every budget
would take hours, so a run that ends has stopped early."""
import glob
import importlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import ROOT

FAST = ["--eval-episodes", "1"]
RUNS = {  # file: (signal, arguments), tiny networks and budgets that would run for hours
    "rlpd": (signal.SIGINT, ["--total-timesteps", "1000000", "--start-training", "100", "--utd", "1", "--num-qs", "2",
                             "--hidden", "32", "--batch-size", "32", "--eval-every", "1000000"]),
    "rlif": (signal.SIGTERM, ["--intervention", "random", "--total-timesteps", "1000000", "--start-training", "100",
                              "--utd", "1", "--num-qs", "2", "--hidden", "32", "--batch-size", "32",
                              "--eval-every", "1000000"]),
    "conrft": (signal.SIGINT, ["--env-id", "Hopper-v4", "--offline-steps", "1000000", "--online-steps", "1000",
                               "--cql-n-actions", "2", "--hidden", "32", "--batch-size", "32", "--eval-every", "1000000"]),
    "inril_residual": (signal.SIGINT, ["--total-timesteps", "10000000", "--bc-steps", "1000000", "--num-envs", "2",
                                       "--num-steps", "64", "--eval-every", "10000000"]),
    "inril_pcgrad": (signal.SIGTERM, ["--total-timesteps", "10000000", "--bc-steps", "1000000", "--num-envs", "2",
                                      "--num-steps", "64", "--eval-every", "10000000"]),
    "ire_vla_lite": (signal.SIGINT, ["--d-model", "32", "--n-layers", "1", "--sft0-steps", "1000000",
                                     "--batch-size", "32"]),
    "grape_tpo": (signal.SIGTERM, ["--d-model", "32", "--n-layers", "1", "--sft-steps", "1000000", "--batch-size", "32",
                                   "--train-tasks", "push-v3", "--heldout-tasks", "reach-v3"]),
    "asap_delta": (signal.SIGINT, ["--method", "asap", "--real-episodes", "1", "--heldout-episodes", "1",
                                   "--delta-steps", "100000000", "--finetune-steps", "100000000", "--num-envs", "2",
                                   "--num-steps", "64"]),
}


def check_run(run_dir, sig, out, err):
    """The files and messages an interrupted run leaves."""
    name = os.path.join("runs", os.path.basename(run_dir))
    assert "Traceback" not in err, err[-3000:]
    assert f"{sig.name}: stopping at the next safe point" in err
    assert f"file are in {name}; exit code {128 + sig}." in err
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=False)
    assert model["interrupted"] is True and isinstance(model["step"], int)
    assert f"Interrupted at step {model['step']}:" in err
    assert open(os.path.join(run_dir, "metrics.csv")).readline() == "step,key,value\n"
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    assert f"model: {os.path.join(name, 'model.pt')}" in out
    return model


def logged(folder):
    """A metrics row is in folder/runs/*/metrics.csv: the Logger (with its handlers) exists and training began."""
    return any(len(open(f).readlines()) > 1 for f in glob.glob(os.path.join(folder, "runs", "*", "metrics.csv")))


def signal_when_logging(sig, folder, module, monkeypatch, delay=0.2, patience=120):
    """A thread that sends `sig` to this process `delay` s after the first metrics row under `folder`.

    The test can never hang: if no row comes within `patience` s, or the handler in place then is not the run's
    Logger (so the signal would reach pytest, or kill it), the thread sends nothing and the run's next
    Logger.log raises instead, which fails the test with a message saying why."""
    failed = []
    log = module.Logger.log

    def guarded_log(self, *a, **k):
        if failed:
            raise RuntimeError(f"test_interrupt: {failed[0]}")
        return log(self, *a, **k)

    monkeypatch.setattr(module.Logger, "log", guarded_log)

    def watch():
        for _ in range(int(patience / 0.05)):
            if logged(folder):
                time.sleep(delay)
                handler = signal.getsignal(sig)
                if type(getattr(handler, "__self__", None)).__name__ == "Logger":  # never pytest's own handler
                    os.kill(os.getpid(), sig)
                else:
                    failed.append(f"the run logs but {sig.name}'s handler is {handler!r}, not the Logger's")
                return
            time.sleep(0.05)
        failed.append(f"no metrics row within {patience} s")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigint_to_a_cli_run_saves_the_model(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "rlpd.py"), *RUNS["rlpd"][1], *FAST]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        p = subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=err, env=dict(os.environ, OMP_NUM_THREADS="1"))
        for _ in range(2400):
            if logged(str(tmp_path)) or p.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(timeout=120)
        finally:
            p.kill()  # a no-op once it has ended; never leave a run behind
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert rc == 130, err[-3000:]
    model = check_run(glob.glob(str(tmp_path / "runs" / "*"))[0], signal.SIGINT, out, err)
    assert 0 < model["step"] < 1_000_000 and model["args"]["total_timesteps"] == 1_000_000


@pytest.mark.parametrize("name", list(RUNS))
def test_signal_in_main_saves_the_model(name, in_tmp, monkeypatch, capsys):
    sig, args = RUNS[name]
    module = importlib.import_module(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args, *FAST])
    thread, threads = signal_when_logging(sig, str(in_tmp), module, monkeypatch), torch.get_num_threads()
    try:
        rc = module.main()
    finally:
        thread.join()
        torch.set_num_threads(threads)  # main() sets --threads for the whole process
    out, err = capsys.readouterr()
    assert rc == 128 + sig, err[-3000:]
    check_run(glob.glob(str(in_tmp / "runs" / "*"))[0], sig, out, err)
    assert signal.getsignal(signal.SIGINT) is not module.Logger.on_signal  # the handlers are given back

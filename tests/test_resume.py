"""Chaos: runs stopped by a signal at any step, in one process or under 2-process DDP, resume bit-exactly.

The DDP case cannot run inside pytest (Lightning's launcher re-runs the command line for its extra rank), so the
test runs this file as a script: `python tests/test_resume.py <genlab fit args>` runs `genlab fit` and writes, per
rank, the exit status it ends with into the folder $CHAOS_EXITS.
"""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning import Callback

from genlab.run_control import TrainingInterrupted
from genlab.cli import main
from genlab.datamodules.loader import BatchLoader, EpochOrder
from genlab.io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
         "--figures=false", "--seed_everything=0", "--trainer.deterministic=true", "--trainer.log_every_n_steps=1"]
FAKE = ["--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=40", "--data.batch_size=8"]  # 5 steps/epoch
MODELS = {
    "ConvVAE": ["--model=ConvVAE", "--model.latent_dim=2", "--model.widths=[4, 8]", "--model.kl_warmup_steps=6"],
    "VQVAE": ["--model=VQVAE", "--model.num_hiddens=8", "--model.num_residual_hiddens=4",
              "--model.num_residual_layers=1", "--model.num_embeddings=8", "--model.embedding_dim=4",
              "--model.dead_code_steps=2"],  # EMA, k-means init and dead-code restarts (all defaults on)
    "GAN": ["--model=GAN", "--model.latent_dim=2", "--model.hidden=[8]"],
    "DenoisingAE": ["--model=DenoisingAE", "--model.widths=[4, 8]"],
}


class SignalAtStep(Callback):
    """Sends `signum` to this process after global step `step`: the interrupt then stops at the next batch end.

    With `wait_for`, waits (up to 60 s) after touching `marker` until that file exists: the test signals the whole
    process group there, so the signal lands at a known step on every rank.
    """

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), marker: str = "", wait_for: str = "") -> None:
        self.step, self.signum, self.marker, self.wait_for = step, signum, marker, wait_for

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step != self.step:
            return
        if not self.marker:
            os.kill(os.getpid(), self.signum)
            return
        Path(f"{self.marker}.{trainer.global_rank}").touch()
        deadline = time.monotonic() + 60
        while not Path(self.wait_for).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the signal itself is delivered right away; leave the handler time to run


def test_loader_state_continues_the_epoch_at_the_next_batch():
    def loader() -> BatchLoader:
        return BatchLoader(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10), 3,
                           EpochOrder(10, shuffle=True, seed=5))

    first = loader()
    first.sampler.set_epoch(2)
    batches = iter(first)
    served = [next(batches)[1] for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    rest = [y for _, y in batches]
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # as Lightning does before the epoch's first batch
    assert [y.tolist() for _, y in resumed] == [y.tolist() for y in rest]
    assert len(torch.cat(served + rest).unique()) == 10
    assert len(list(resumed)) == 4  # the next pass is a whole epoch again
    other_epoch = loader()
    other_epoch.load_state_dict(state)
    other_epoch.sampler.set_epoch(3)  # a checkpoint from the end of epoch 2: epoch 3 starts from its first batch
    assert len(list(other_epoch)) == 4


class SignalDuringSanityCheck(Callback):
    def on_validation_batch_end(self, trainer, *args) -> None:
        if trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)


def parameters(root: Path) -> dict:
    checkpoint = load_checkpoint(max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime))
    return {"global_step": checkpoint["global_step"], **checkpoint["state_dict"]}


def assert_same(straight: dict, resumed: dict) -> None:
    assert straight["global_step"] == resumed["global_step"] > 0
    assert straight.keys() == resumed.keys()
    different = [name for name in straight if not torch.equal(torch.as_tensor(straight[name]),
                                                               torch.as_tensor(resumed[name]))]
    assert not different, f"the resumed run differs in {different}"


@pytest.mark.parametrize(("model", "step"), [("ConvVAE", 4), ("ConvVAE", 8), ("VQVAE", 3), ("GAN", 6),
                                             ("DenoisingAE", 7)])
def test_signal_at_any_step_resumes_bit_exactly(model, step, tmp_path):
    """3 epochs straight == stopped by SIGTERM mid-epoch (or at its last batch) + `--ckpt_path last` to 3."""
    common = [*MODELS[model], *FAKE, *QUIET, "--trainer.max_epochs=3"]
    main(["fit", *common, f"--trainer.default_root_dir={tmp_path / 'straight'}"])
    resumed = [*common, f"--trainer.default_root_dir={tmp_path / 'resumed'}"]
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM"):
        main(["fit", *resumed, "--trainer.callbacks+=tests.test_resume.SignalAtStep",
              f"--trainer.callbacks.init_args.step={step}"])
    with pytest.raises(KeyboardInterrupt):  # the handlers are given back: Ctrl-C acts as before the run
        signal.raise_signal(signal.SIGINT)
    stopped = load_checkpoint(next((tmp_path / "resumed").rglob("last.ckpt")))
    assert stopped["global_step"] in (step + 1, step + 2)  # the next batch end (GANs step two optimisers a batch)
    main(["fit", *resumed, "--ckpt_path=last"])
    assert_same(parameters(tmp_path / "straight"), parameters(tmp_path / "resumed"))


def test_signal_during_the_sanity_check_stops_before_training(tmp_path):
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM before training began") as error:
        main(["fit", *MODELS["ConvVAE"], *FAKE, *QUIET, f"--trainer.default_root_dir={tmp_path}",
              "--trainer.callbacks+=tests.test_resume.SignalDuringSanityCheck"])
    assert error.value.exit_code == 143 and not list(tmp_path.rglob("*.ckpt"))


def free_port() -> int:
    """A port no other DDP run of this test uses: runs started side by side could otherwise draw the same one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    while port in PORTS:
        port += 1
    PORTS.add(port)
    return port


PORTS: set[int] = set()


def ddp_fit(tmp_path: Path, name: str, extra: list[str] = ()) -> subprocess.Popen:
    exits = tmp_path / f"{name}-exits"
    exits.mkdir()
    args = [sys.executable, __file__, "fit", *MODELS["ConvVAE"], *FAKE, *QUIET, "--trainer.max_epochs=2",
            "--trainer.devices=2", "--trainer.strategy=ddp", f"--trainer.default_root_dir={tmp_path / name}", *extra]
    env = {**os.environ, "CHAOS_EXITS": str(exits), "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_every_ddp_rank_saves_once_and_resumes_exactly(signum, tmp_path):
    """As SLURM preempts a job (SIGTERM) or Ctrl-C stops it (SIGINT): the signal reaches every rank; all stop at one
    step, exit 128 + signum within 30 s and leave one loadable last.ckpt; after SIGTERM, `--ckpt_path last` ends
    equal to an uninterrupted 2-process run."""
    step = random.Random().randrange(1, 5)  # 3 steps an epoch per rank (18 images), 6 in all: stops at 2 to 5
    marker, sent = tmp_path / "at-step", tmp_path / "sent"
    straight = ddp_fit(tmp_path, "straight") if signum == signal.SIGTERM else None  # side by side: saves time
    interrupted = ddp_fit(tmp_path, "resumed", ["--trainer.callbacks+=tests.test_resume.SignalAtStep",
                                                f"--trainer.callbacks.init_args.step={step}",
                                                f"--trainer.callbacks.init_args.marker={marker}",
                                                f"--trainer.callbacks.init_args.wait_for={sent}"])
    deadline = time.monotonic() + 180
    while not all(Path(f"{marker}.{rank}").exists() for rank in (0, 1)) and time.monotonic() < deadline:
        assert interrupted.poll() is None, interrupted.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(interrupted.pid, signum)  # every process of the job, like SLURM's preemption or Ctrl-C
    signalled = time.monotonic()
    sent.touch()
    _, stderr = interrupted.communicate(timeout=60)
    assert time.monotonic() - signalled < 30
    exits = sorted(p.read_text() for p in (tmp_path / "resumed-exits").iterdir())
    assert interrupted.returncode == 128 + signum, stderr[-3000:]
    assert exits == [str(128 + signum)] * 2, f"step {step}: rank exit statuses {exits}\n{stderr[-3000:]}"
    saved = list((tmp_path / "resumed").rglob("last.ckpt"))
    assert len(saved) == 1 and not list((tmp_path / "resumed").rglob("*.tmp"))
    # The stop comes at the next batch end; a signal after an epoch's last batch (3 a rank) stops at that epoch's end.
    expected = step if step % 3 == 0 else step + 1
    assert load_checkpoint(saved[0])["global_step"] == expected, f"signalled after step {step}\n{stderr[-3000:]}"
    if straight is None:
        return
    resumed = ddp_fit(tmp_path, "resumed-again", [f"--trainer.default_root_dir={tmp_path / 'resumed'}",
                                                  "--ckpt_path=last"])
    for process in (straight, resumed):
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-3000:]
    assert_same(parameters(tmp_path / "straight"), parameters(tmp_path / "resumed"))


if __name__ == "__main__":  # one rank of a DDP run: genlab's CLI, recording the status this rank exits with
    from genlab.cli import console

    status: object = 0
    try:
        console()
    except SystemExit as stop:
        status = stop.code
        raise
    finally:
        (Path(os.environ["CHAOS_EXITS"]) / f"rank{os.environ.get('LOCAL_RANK', '0')}").write_text(str(status))

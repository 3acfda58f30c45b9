"""Item 8 of issue #18: a full disk, a read-only folder or a file where a folder should be ends in one
`genlab: error:` line naming the path and the errno, never a traceback; `genlab test` on a read-only run still prints
its table. Tests run as root here, where chmod does not stop a write, so the failures are simulated at the calls
that write (the errors are the ones the operating system raises)."""

import builtins
import errno
import io
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from genlab.cli import main

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY = ["--model=VAE", "--model.hidden=[8]", "--model.latent_dim=2", "--data=FakeImages",
        "--data.image_shape=[1, 8, 8]", "--data.size=16", "--data.batch_size=8", "--figures=false", *QUIET]
NO_METRICS = ["--metrics.num_importance_samples=2", "--metrics.num_fid_samples=0"]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def refuse(path: object, code: int) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@contextmanager
def read_only(folder: Path, monkeypatch: pytest.MonkeyPatch, code: int = errno.EROFS):
    """Every write, file creation or mkdir under `folder` fails with `code`, as on a read-only mount."""
    folder = str(folder.resolve())
    inside = lambda path: isinstance(path, (str, Path)) and os.path.abspath(path).startswith(folder)  # noqa: E731
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(m in mode for m in "wax+"):
            raise refuse(file, code)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & WRITE_FLAGS:
            raise refuse(path, code)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            raise refuse(path, errno.EEXIST if os.path.isdir(path) else code)
        return real_mkdir(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        for target, name, fake in ((builtins, "open", fake_open), (io, "open", fake_open), (os, "open", fake_os_open),
                                   (os, "mkdir", fake_mkdir)):
            patch.setattr(target, name, fake)
        yield


def from_the_shell(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple:
    """(exit status, stdout, the `genlab: error:` lines) of `genlab ARGS` (main with sys.argv, as the console)."""
    monkeypatch.setattr(sys, "argv", ["genlab", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return exit_.value.code, out, [line for line in err.splitlines() if line.startswith("genlab: error:")]


@pytest.fixture
def trained(tmp_path) -> Path:
    main(["fit", *TINY, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}"])
    return tmp_path / "lightning_logs" / "version_0"


def test_fit_into_a_read_only_folder(tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    with read_only(root, monkeypatch):
        status, _, errors = from_the_shell(["fit", *TINY, f"--trainer.default_root_dir={root}"], monkeypatch, capsys)
    assert status == 1 and len(errors) == 1
    assert str(root) in errors[0] and "EROFS" in errors[0] and "Read-only file system" in errors[0]


def test_a_full_disk_while_saving_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk(obj, file, *args, **kwargs):
        if hasattr(file, "write"):  # a checkpoint being written: the device fills up part-way
            file.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it: no file name
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    args = ["fit", *TINY, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}"]
    status, _, errors = from_the_shell(args, monkeypatch, capsys)
    assert status == 1 and len(errors) == 1
    assert "ENOSPC" in errors[0] and "checkpoints" in errors[0] and ".ckpt" in errors[0], errors
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no partial file left


def test_an_output_path_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    status, _, errors = from_the_shell(["fit", *TINY, f"--trainer.default_root_dir={tmp_path / 'afile'}"],
                                       monkeypatch, capsys)
    assert status == 1 and len(errors) == 1 and "afile" in errors[0] and "ENOTDIR" in errors[0], errors


def test_test_on_a_read_only_run_prints_its_table_then_says_where_it_could_not_write(trained, monkeypatch, capsys):
    before = sorted(p.name for p in trained.iterdir())
    with read_only(trained, monkeypatch):
        status, out, errors = from_the_shell(["test", "--ckpt_path=last", *NO_METRICS, *QUIET,
                                              f"--trainer.default_root_dir={trained.parent.parent}"],
                                             monkeypatch, capsys)
    assert "neg_elbo" in out  # the table came first
    assert status == 1 and len(errors) == 1
    assert str(trained) in errors[0] and "EROFS" in errors[0], errors
    assert sorted(p.name for p in trained.iterdir()) == before

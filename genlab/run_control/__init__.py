"""Run control: what makes a run stoppable, resumable and safe, and how a command finds the run it continues.

- `resume`: `LatestCheckpoint` (last.ckpt always current), `GracefulInterrupt` (Ctrl-C/SIGTERM save and stop),
  `RandomState` (each epoch's and batch's randomness restored on resume);
- `guard`: `NonFiniteGuard`, stopping at the first NaN/Inf with its step and culprit;
- `compile`: `Compile`, opt-in `torch.compile` of a model's networks;
- `defaults`: `fit_callbacks`, the guards and figures `genlab fit` adds without being asked;
- `resuming`: `parse_resuming`, which checkpoint `--ckpt_path` names and the settings it brings;
- `run_folder`: `RunFolder`, the `version_N` folder a command writes into;
- `checks`: `check_settings` and `check_built`, what is checked before and after the classes are built;
- `signals`: the SIGINT/SIGTERM handlers saved before and restored after every command.
"""

from .checks import check_built, check_image_shape, check_settings
from .compile import Compile, compile_networks
from .defaults import fit_callbacks
from .guard import NonFiniteError, NonFiniteGuard
from .resume import GracefulInterrupt, LatestCheckpoint, RandomState, TrainingInterrupted, last_checkpoint_path
from .resuming import find_last, parse_resuming
from .run_folder import RunFolder, write_problem
from .signals import restore, signal_handlers

__all__ = ["Compile", "GracefulInterrupt", "LatestCheckpoint", "NonFiniteError", "NonFiniteGuard", "RandomState",
           "RunFolder", "TrainingInterrupted", "check_built", "check_image_shape", "check_settings", "compile_networks",
           "find_last", "fit_callbacks", "last_checkpoint_path", "parse_resuming", "restore", "signal_handlers",
           "write_problem"]

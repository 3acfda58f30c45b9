"""`fit_callbacks`: the callbacks the CLI adds to `fit` without being asked -- the guards that make a run stoppable
and resumable, the figures the model can feed (`genlab.figures.default_callbacks`) and `Compile`."""

from lightning import Callback

from ..figures.defaults import default_callbacks
from .compile import Compile
from .guard import NonFiniteGuard
from .resume import GracefulInterrupt, RandomState


def fit_callbacks(given: list[Callback], model: object, figures: bool = True, every_n_epochs: int = 1,
                  non_finite_guard: bool = True, compile: bool = False) -> list[Callback]:
    """`given` plus genlab's defaults for `fit`, each only where no callback of its class was given: Ctrl-C/SIGTERM
    saving, per-epoch random state and the NaN/Inf guard first (the guard must run before a ModelCheckpoint could
    save a non-finite step), then the figures and `Compile`."""
    present = {type(callback) for callback in given}
    guards = [GracefulInterrupt(), RandomState(), *([NonFiniteGuard()] if non_finite_guard else [])]
    extra = [*(default_callbacks(model, every_n_epochs) if figures else []), *([Compile()] if compile else [])]
    return [*(c for c in guards if type(c) not in present), *given, *(c for c in extra if type(c) not in present)]

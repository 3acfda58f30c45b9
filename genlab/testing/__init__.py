"""The model contract as a pytest suite: genlab checks its own models with it, and yours in three lines.

    from genlab.testing import ModelContract

    class TestMyVAE(ModelContract):
        def make_model(self):
            return MyVAE(image_shape=(1, 16, 16))

pytest collects the inherited `test_*` methods (the base classes, not named Test*, are not collected). Needs
pytest (`pip install "genlab[test]"`): without it, importing this module raises an ImportError saying so.

What is checked (a check that does not apply, or is named in `skip`, is skipped with the reason):
- protocols: the model satisfies each class in `protocols`; as a `LatentModel`, `encode` gives one code per image
  (`(B, latent_dim)` with `flat_latent`) and `decode`/`reconstruct` images of `image_shape` in [0, 1]; as a
  `Sampler`, `sample` does too and the same generator seed draws the same images;
- `loss(x, y)`: a dict of named, finite scalars holding "loss" (exactly `terms` besides it, when given);
  backward reaches every trainable parameter, and each one under `reached_modules` gets a non-zero gradient;
- "fit": a short fit on one repeated binary image lowers the loss by `fit_improvement` of (loss - `loss_floor`);
- "checkpoint": a round trip restores the hyperparameters (exactly `hparams`, when given), weights and outputs;
- "bf16": `loss` under bf16 autocast is finite; a bf16-mixed fit logs only finite values, "val/loss" and `logged`;
- "cli": `genlab fit --model <import path> --trainer.fast_dev_run 1` builds and trains the model, its settings
  taken from its hyperparameters (or `cli_args`), its image shape linked from the data;
- declared behaviour: `stochastic` (reconstruct(stochastic=True) varies with the seed) and `temperature_spreads`.

`AutoencoderContract` sets the defaults of models built on `genlab.models.Autoencoder` and adds their term weights.
"""

from .contract import AutoencoderContract, ModelContract
from .fits import LoggedValues, logged_fit, quiet_trainer

__all__ = ["ModelContract", "AutoencoderContract", "LoggedValues", "quiet_trainer", "logged_fit"]

"""`ModelContract` and `AutoencoderContract`: the checks of `genlab.testing` (see its docstring)."""

import inspect
import json
import math

try:
    import pytest
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("genlab.testing is a pytest suite: install pytest (pip install 'genlab[test]')") from error
import torch
from lightning import LightningModule, seed_everything
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ..models.protocols import Conditional, LatentModel, Sampler
from .fits import logged_fit, quiet_trainer


def check_images(images: Tensor, shape: tuple[int, ...]) -> None:
    assert images.shape[1:] == shape, f"images of shape {tuple(images.shape[1:])}, expected {shape}"
    assert images.min() >= 0 and images.max() <= 1, f"images in [{images.min():.3g}, {images.max():.3g}], not [0, 1]"


class ModelContract:
    """The checks every genlab model passes; subclass it as `Test<Name>` and define `make_model`."""

    protocols: tuple[type, ...] = ()  # protocols the model must satisfy (genlab.models.protocols)
    image_shape: tuple[int, ...] | None = None  # None: the model's own `image_shape`
    flat_latent = True  # encode gives (B, latent_dim); False for spatial codes
    terms: set[str] | None = None  # the exact names `loss` returns besides "loss"; None: any names
    hparams: set[str] | None = None  # the exact names of the saved hyperparameters; None: any names
    reached_modules: tuple[str, ...] = ()  # submodules whose every parameter must get a non-zero gradient
    unused_parameters: tuple[str, ...] = ()  # name prefixes of parameters `loss` may leave without a gradient
    fit_steps, fit_improvement, loss_floor = 40, 0.2, 0.0  # the loss drops by 20% of (before - floor)
    logs_training = True  # a fit logs "train/..." values
    logged: set[str] = set()  # names a (bf16) fit must log besides "val/loss", e.g. {"val/bpd"}
    stochastic: bool | None = None  # reconstruct(stochastic=True) varies with the seed; None: not checked
    temperature_spreads: bool | None = None  # sample(temperature=t) spreads wider for larger t; None: not checked
    model_path: str | None = None  # import path for the CLI; None: the class's module and name
    cli_args: tuple[str, ...] | None = None  # `--model.*` flags for the CLI; None: from the hyperparameters
    cli_figures = False  # let the CLI draw its default figures (slow: matplotlib)
    skip: dict[str, str] = {}  # check ("fit", "checkpoint", "bf16", "cli") -> why it does not apply

    def make_model(self) -> LightningModule:
        raise NotImplementedError(f"{type(self).__name__} must define make_model() returning the model to check")

    # --- data ---
    @pytest.fixture(autouse=True)
    def _seeded(self) -> None:
        seed_everything(0, verbose=False)

    def skip_if_asked(self, check: str) -> None:
        if check in self.skip:
            pytest.skip(f"{check}: {self.skip[check]}")

    def shape_of(self, model: LightningModule) -> tuple[int, ...]:
        shape = self.image_shape or getattr(model, "image_shape", None)
        if shape is None:
            raise AttributeError(f"{type(model).__name__} has no image_shape: set image_shape on {type(self).__name__}")
        return tuple(shape)

    def batch(self, model: LightningModule, size: int = 4) -> tuple[Tensor, Tensor]:
        """8-bit images in [0, 1], as every datamodule delivers them, and labels below the model's num_classes."""
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (size, *self.shape_of(model)), generator=generator) / 255
        labels = torch.randint(0, getattr(model, "num_classes", None) or 10, (size,), generator=generator)
        return images, labels

    def condition(self, model: LightningModule, images: Tensor, labels: Tensor) -> Tensor | None:
        """What `y` is for encode/decode/sample: the images or labels a conditional model reads, else None."""
        kind = model.condition_kind if isinstance(model, Conditional) else None
        return {"image": images, "label": labels}.get(kind)

    def conditioned_batch(self, model: LightningModule) -> tuple[Tensor, Tensor | None]:
        """`batch`'s images and the `y` the model reads with them (`condition`)."""
        images, labels = self.batch(model)
        return images, self.condition(model, images, labels)

    def loader(self, images: Tensor, labels: Tensor, batch_size: int = 16, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle)

    def draw(self, model: LightningModule, num_samples: int, y: Tensor | None, seed: int = 0, **kwargs) -> Tensor:
        """`sample` with a seeded generator, given one condition when the model reads one."""
        return model.sample(num_samples, y=None if y is None else y[:1], generator=torch.Generator().manual_seed(seed),
                            **kwargs)

    # --- the checks ---
    def test_protocol_shapes_and_range(self) -> None:
        model = self.make_model().eval()
        for protocol in self.protocols:
            assert isinstance(model, protocol), f"{type(model).__name__} does not satisfy {protocol.__name__}"
        if isinstance(model, Conditional):
            assert model.condition_kind in ("label", "image", None), model.condition_kind
        if not isinstance(model, LatentModel | Sampler):
            pytest.skip(f"{type(model).__name__} is neither a LatentModel nor a Sampler")
        images, y = self.conditioned_batch(model)
        shape = self.shape_of(model)
        with torch.no_grad():
            if isinstance(model, LatentModel):
                z = model.encode(images, y)
                assert z.shape == (len(images), model.latent_dim) if self.flat_latent else len(z) == len(images)
                check_images(model.decode(z, y), shape)
                check_images(model.reconstruct(images, y), shape)
            if isinstance(model, Sampler):
                check_images(self.draw(model, 3, y), shape)
                assert torch.equal(self.draw(model, 3, y), self.draw(model, 3, y)), "same seed, different samples"

    def test_loss_terms_are_named_finite_scalars_and_reach_the_parameters(self) -> None:
        model = self.make_model()
        terms = model.loss(*self.batch(model))
        assert isinstance(terms, dict) and "loss" in terms, f"loss() must return a dict with 'loss', got {terms!r}"
        if self.terms is not None:
            assert set(terms) == {"loss"} | set(self.terms), f"terms {sorted(terms)}, expected {sorted(self.terms)}"
        for name, value in terms.items():
            assert isinstance(name, str) and value.ndim == 0 and torch.isfinite(value), f"{name}: {value}"
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not terms["loss"].requires_grad:  # a model solved in closed form (PPCA) has nothing to train
            assert not trainable, f"the loss has no gradient, yet {[name for name, _ in trainable]} are trainable"
            return
        terms["loss"].backward()
        missed = [name for name, p in trainable if p.grad is None and not name.startswith(self.unused_parameters)]
        assert not missed, f"the loss does not reach {missed} (name deliberate ones in unused_parameters)"
        assert all(torch.isfinite(p.grad).all() for _, p in trainable if p.grad is not None)
        for module in self.reached_modules:
            for name, p in model.get_submodule(module).named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{module}.{name} gets no gradient"

    def test_a_short_fit_lowers_the_loss(self, tmp_path) -> None:
        self.skip_if_asked("fit")
        model = self.make_model()
        pattern = torch.rand(1, *self.shape_of(model)).round()  # one binary image: easy to learn
        data, labels = pattern.repeat(64, 1, 1, 1), torch.zeros(64, dtype=torch.long)

        def evaluate() -> float:
            torch.manual_seed(0)
            with torch.no_grad():
                return model.eval().loss(data, labels)["loss"].item()

        before = evaluate()
        quiet_trainer(tmp_path, max_steps=self.fit_steps).fit(model.train(), self.loader(data, labels, shuffle=True))
        after = evaluate()
        assert after < before - self.fit_improvement * (before - self.loss_floor), f"loss {before:.4g} -> {after:.4g}"

    def test_checkpoint_round_trip_restores_identical_outputs(self, tmp_path) -> None:
        self.skip_if_asked("checkpoint")
        model = self.make_model()
        if self.hparams is not None:
            assert set(model.hparams) == set(self.hparams), f"hyperparameters {sorted(model.hparams)}"
        images, labels = self.batch(model)
        trainer = quiet_trainer(tmp_path, max_steps=2)
        trainer.fit(model, self.loader(images, labels))
        trainer.save_checkpoint(tmp_path / "model.ckpt")
        restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt").eval()
        model.eval()
        assert dict(restored.hparams) == dict(model.hparams)
        state, restored_state = model.state_dict(), restored.state_dict()
        assert state.keys() == restored_state.keys()
        assert all(torch.equal(state[key], restored_state[key]) for key in state)
        expected, found = self.outputs(model, images, labels), self.outputs(restored, images, labels)
        assert found.keys() == expected.keys()
        for key, value in found.items():
            assert torch.equal(value, expected[key]), f"{key} differs after restoring"

    def outputs(self, model: LightningModule, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """What a restored model must reproduce exactly: seeded loss terms, reconstructions and samples."""
        y = self.condition(model, images, labels)
        with torch.no_grad():
            torch.manual_seed(0)
            found = {f"loss/{name}": value for name, value in model.loss(images, labels).items()}
            if isinstance(model, LatentModel):
                found["reconstruct"] = model.reconstruct(images, y)
            if isinstance(model, Sampler):
                found["sample"] = self.draw(model, 2, y)
        return found

    def test_bf16_gives_finite_terms_and_logged_values(self, tmp_path) -> None:
        self.skip_if_asked("bf16")
        model = self.make_model()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = model.loss(*self.batch(model))
        assert all(torch.isfinite(value) for value in terms.values()), terms
        values = logged_fit(model, tmp_path, self.loader(*self.batch(model, 24), batch_size=8))
        assert not self.logs_training or any(key.startswith("train/") for key in values), values
        assert {"val/loss", *self.logged} <= set(values), f"{sorted(values)} lack {sorted(self.logged)} or val/loss"
        assert all(math.isfinite(value) for value in values.values()), values

    def test_cli_fit_trains_the_model_by_import_path(self, tmp_path) -> None:
        self.skip_if_asked("cli")
        from ..cli import main  # the whole command line: only this check needs it

        model = self.make_model()
        cls = type(model)
        path = self.model_path or f"{cls.__module__}.{cls.__qualname__}"
        if "<" in path or cls.__module__ == "__main__":
            pytest.skip(f"{path} cannot be imported by path: define the class in a module or set model_path")
        shape = self.shape_of(model)
        cli = main(["fit", f"--model={path}", *self.model_flags(model), "--data=FakeImages",
                    f"--data.image_shape={list(shape)}", "--data.size=16", "--data.batch_size=8",
                    f"--figures={str(self.cli_figures).lower()}", "--trainer.fast_dev_run=1",
                    "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
                    "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}"])
        assert type(cli.model) is cls and self.shape_of(cli.model) == shape
        assert cli.trainer.state.finished and cli.trainer.global_step >= 1
        assert all(torch.isfinite(value).all() for value in cli.trainer.callback_metrics.values())

    def model_flags(self, model: LightningModule) -> list[str]:
        """`--model.<name>=<value>` for each saved hyperparameter the class takes (a base class may save more),
        but those the CLI links from the data; strings as they are (the parser takes a `str` literally), anything
        else as JSON."""
        if self.cli_args is not None:
            return list(self.cli_args)
        parameters = inspect.signature(type(model).__init__).parameters
        takes = set(parameters) | ({*model.hparams} if any(p.kind is p.VAR_KEYWORD for p in parameters.values())
                                   else set())
        return [f"--model.{name}={value if isinstance(value, str) else json.dumps(value)}"
                for name, value in model.hparams.items() if name in takes - {"image_shape", "num_classes"}]

    def test_stochastic_reconstructions_vary_only_for_stochastic_posteriors(self) -> None:
        if self.stochastic is None:
            pytest.skip("stochastic is not declared")
        model = self.make_model().eval()
        images, y = self.conditioned_batch(model)
        draw = lambda seed: model.reconstruct(images, y, stochastic=True,  # noqa: E731
                                              generator=torch.Generator().manual_seed(seed))
        check_images(draw(0), self.shape_of(model))
        assert torch.equal(draw(0), draw(0))
        assert torch.equal(draw(0), draw(1)) == (not self.stochastic)

    def test_sampling_temperature_spreads_the_samples(self) -> None:
        if self.temperature_spreads is None:
            pytest.skip("temperature_spreads is not declared")
        model = self.make_model().eval()
        _, y = self.conditioned_batch(model)
        spread = lambda t: self.draw(model, 64, y, seed=1, temperature=t)  # noqa: E731
        assert torch.equal(spread(1.0), spread(1.0))
        assert (spread(20**0.5).std() > spread(0.1).std()) == self.temperature_spreads


class AutoencoderContract(ModelContract):
    """`ModelContract` with the defaults of a VAE built on `genlab.models.Autoencoder`, plus its term weights."""

    protocols = (LatentModel, Sampler)
    reached_modules = ("encoder",)
    stochastic, temperature_spreads = True, True  # set stochastic = False for deterministic codes (AE, VQ)
    term_weights: dict[str, float] | None = None  # the expected `term_weights()` of a fresh model; None: any

    def test_loss_is_recon_plus_the_weighted_terms(self) -> None:
        model = self.make_model()
        if self.term_weights is not None:
            assert model.term_weights() == self.term_weights
        terms = model.loss(*self.batch(model))
        weighted = sum(weight * terms[name] for name, weight in model.term_weights().items())
        assert torch.allclose(terms["loss"], terms["recon"] + weighted)

"""`RandomState`: each rank draws its own noise, and every training batch's stream is a function of
(seed, epoch, batch, rank), so a run resumed mid-epoch on any rank continues it exactly."""

from types import SimpleNamespace

import torch

from genlab.callbacks import RandomState


def draws(seed: int, epoch: int, batch: int, rank: int, world_size: int = 2) -> torch.Tensor:
    trainer = SimpleNamespace(current_epoch=epoch, global_rank=rank, world_size=world_size)
    state = RandomState(seed)
    state.on_train_epoch_start(trainer, None)
    state.on_train_batch_start(trainer, None, None, batch)
    return torch.randn(4)


def test_ranks_draw_different_noise():
    assert not torch.equal(draws(0, 1, 5, rank=0), draws(0, 1, 5, rank=1))


def test_a_batch_stream_depends_only_on_seed_epoch_batch_and_rank():
    first = draws(0, 1, 5, rank=1)
    torch.rand(100)  # whatever ran before (validation, figures, another batch) does not matter
    assert torch.equal(first, draws(0, 1, 5, rank=1))
    others = [draws(1, 1, 5, 1), draws(0, 2, 5, 1), draws(0, 1, 6, 1)]
    assert all(not torch.equal(first, other) for other in others)


def test_the_epoch_stream_differs_by_rank():
    def epoch_draw(rank: int) -> torch.Tensor:
        RandomState(3).on_train_epoch_start(SimpleNamespace(current_epoch=0, global_rank=rank, world_size=2), None)
        return torch.randn(4)
    assert not torch.equal(epoch_draw(0), epoch_draw(1))

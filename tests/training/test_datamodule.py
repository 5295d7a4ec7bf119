import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.training.config import OptimConfig
from glassformer.training.datamodule import FixedWindows, RandomWindows, TokenWindowDataModule
from glassformer.training.module import lr_factor


def make_dm(seed: int, max_steps: int = 6) -> TokenWindowDataModule:
    tokens = np.arange(5000, dtype=np.uint16)
    return TokenWindowDataModule(tokens, tokens[:600], n_ctx=16, batch_size=4, seed=seed, max_steps=max_steps,
                                 val_batches=3)


def test_training_windows_are_deterministic_under_a_seed():
    a = torch.stack(list(make_dm(0).train_dataloader()))
    b = torch.stack(list(make_dm(0).train_dataloader()))
    c = torch.stack(list(make_dm(1).train_dataloader()))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (6, 4, 17)


def test_windows_are_contiguous_slices_of_the_token_array():
    batch = next(iter(make_dm(3).train_dataloader()))
    diffs = batch[:, 1:] - batch[:, :-1]
    assert torch.all(diffs == 1)  # the array is arange, so a window is consecutive integers


def test_a_resumed_data_stream_continues_where_it_stopped():
    """Sample start+i of a stream opened at `start` equals sample start+i of the stream opened at 0."""
    tokens = np.arange(5000, dtype=np.uint16)
    full = RandomWindows(tokens, 16, 40, seed=7)
    resumed = RandomWindows(tokens, 16, 20, seed=7, start=20)
    for i in range(20):
        assert torch.equal(full[20 + i], resumed[i])


def test_validation_windows_are_fixed_and_in_range():
    tokens = np.arange(300, dtype=np.uint16)
    ds = FixedWindows(tokens, 16, 10)
    assert len(ds) == 10
    assert int(ds[len(ds) - 1][-1]) == 299
    assert torch.equal(ds[3], FixedWindows(tokens, 16, 10)[3])


def test_too_short_token_array_is_a_clear_error():
    with pytest.raises(ValueError, match="n_ctx"):
        RandomWindows(np.arange(10, dtype=np.uint16), 16, 4, 0)


@settings(max_examples=50, deadline=None)
@given(warmup=st.integers(0, 50), total=st.integers(60, 500), step=st.integers(0, 600),
       schedule=st.sampled_from(["cosine", "linear", "constant"]), floor=st.floats(0, 1))
def test_lr_schedule_stays_between_floor_and_peak(warmup, total, step, schedule, floor):
    f = lr_factor(step, total, OptimConfig(warmup_steps=warmup, schedule=schedule, min_lr_ratio=floor))
    if step < warmup:
        assert f == pytest.approx(step / warmup)
    else:
        assert floor - 1e-9 <= f <= 1 + 1e-9
    if step >= total and schedule != "constant" and step >= warmup:
        assert f == pytest.approx(floor)

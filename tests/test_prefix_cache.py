"""The frozen-prefix token cache is an LRU bounded by bytes: many small evaluation splits do not
push out the train split a run keeps using, and the budget is never exceeded."""

from __future__ import annotations

import torch

from bench import features


class FakeModel:
    """What prefix_tokens needs of a split model: eval/train switches and embed()."""

    training = True
    calls = 0

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def embed(self, x):
        FakeModel.calls += 1
        return x.float() * 2


class FakeInputs:
    def __init__(self, n: int):
        self.x = torch.ones(n, 4, 8)  # n × 4 tokens × 8 dims, 128 bytes per image

    def sequential(self, batch_size):
        yield from self.x.split(batch_size)


def test_lru_is_bounded_by_bytes_and_keeps_the_split_in_use(monkeypatch):
    features._CACHE.clear()
    split_bytes = 10 * 4 * 8 * 4
    monkeypatch.setenv("BENCH_PREFIX_CACHE_GB", str(3.5 * split_bytes / 2**30))  # room for 3 splits of 10 images
    model = FakeModel()
    train = features.prefix_tokens(model, FakeInputs(10), 4, torch.device("cpu"), "train")
    assert torch.equal(train, torch.full((10, 4, 8), 2.0)) and model.training  # mode restored
    for i in range(12):  # e.g. 12 corruption splits evaluated after training
        features.prefix_tokens(model, FakeInputs(10), 4, torch.device("cpu"), f"c/{i}")
        features.prefix_tokens(model, FakeInputs(10), 4, torch.device("cpu"), "train")  # used again: most recent
    assert "train" in features._CACHE and len(features._CACHE) == 3
    assert sum(t.numel() * t.element_size() for t in features._CACHE.values()) <= 3.5 * split_bytes
    calls = FakeModel.calls
    features.prefix_tokens(model, FakeInputs(10), 4, torch.device("cpu"), "train")
    assert FakeModel.calls == calls  # a hit computes nothing
    features._CACHE.clear()

"""The data loader: identical batches for 0 and 2 workers (in-memory and file-backed splits,
eval and augmented), persistent workers reused across passes, and segmentation evaluation whose
metrics do not depend on the worker count."""

from __future__ import annotations

import gc
import multiprocessing
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from bench.data import DATASETS, ImageArrays, ImageFiles
from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, to_model_input, to_pixels
from bench.data.seg_transforms import keep_ratio_resize, slide_inference
from bench.data.transforms import ClassificationTransform
from bench.features import SplitInputs, data_loader, sample_generator
from bench.seg_metrics import IoUAccumulator
from bench.segment import evaluate_segmentation
import data_fixtures as fx


def _cifar_like(n: int = 10, seed: int = 0) -> ImageArrays:
    """Smooth 32×32 images (so a resize has something to get right) with labels."""
    rng = np.random.default_rng(seed)
    images = np.stack([fx.smooth_image(rng, 32, 32) for _ in range(n)])
    return ImageArrays(images, rng.integers(0, 10, size=n).astype(np.int64))


def _batches(n: int, size: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return [order[s : s + size] for s in range(0, n, size)]


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("augment", [None, (0, 3)])
def test_in_memory_split_identical_for_0_and_2_workers(augment):
    split = _cifar_like()
    t = ClassificationTransform(56, 0.875, "rrc_flip")
    batches = _batches(len(split), 4)
    zero = list(SplitInputs(split, t, num_workers=0).batches(batches, augment))
    two = list(SplitInputs(split, t, num_workers=2).batches(batches, augment))
    assert _equal(zero, two) and [len(b) for b in zero] == [4, 4, 2] and zero[0].dtype == torch.float32
    # and each batch holds what the per-image transform gives for its indices, in batch order
    for index, x in zip(batches, zero):
        for k, i in enumerate(index.tolist()):
            pixels = to_pixels(split.image(i))
            one = t.eval(pixels) if augment is None else t.train(pixels, sample_generator(augment, i))
            assert torch.equal(x[k], one)


def test_in_memory_eval_matches_torchvision_reference():
    """CIFAR as our runs feed it (32 px → 256 bicubic → centre 224) against torchvision's PIL pipeline."""
    split = _cifar_like(4)
    reference = T.Compose([
        T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    ours = torch.cat(list(SplitInputs(split, ClassificationTransform(224, 0.875), num_workers=2).sequential(2)))
    expected = torch.stack([reference(Image.fromarray(split.image(i))) for i in range(4)])
    grey = (ours - expected).abs() * torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    assert ours.shape == (4, 3, 224, 224) and grey.max() <= 1.001 and grey.mean() < 0.05, (grey.max(), grey.mean())


def test_augmented_epoch_independent_of_batching_and_workers(tmp_path, monkeypatch):
    """A sample's augmentation depends on (seed, epoch, index) only: regrouping the same order into
    other batch sizes (a resume with another batch size) or other workers gives the same images."""
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    fx.write_tiny_imagenet(tmp_path)
    split = DATASETS.get("tiny_imagenet").load("train", tmp_path)
    t = ClassificationTransform(28, 0.875, "rrc_flip")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))
    whole = torch.cat(list(SplitInputs(split, t, num_workers=0).batches([order], augment=(0, 1))))
    by_two = torch.cat(list(SplitInputs(split, t, num_workers=2).batches(list(order.split(2)), augment=(0, 1))))
    tail = torch.cat(list(SplitInputs(split, t, num_workers=2).batches([order[3:]], augment=(0, 1))))  # resumed mid-epoch
    assert torch.equal(whole, by_two) and torch.equal(whole[3:], tail)
    other = torch.cat(list(SplitInputs(split, t, num_workers=0).batches([order], augment=(1, 1))))
    assert not torch.equal(whole, other)  # the seed does change the augmentation


def test_workers_persist_across_passes_and_stop_with_their_inputs():
    split = _cifar_like()
    t = ClassificationTransform(28, 1.0, "flip")
    before = _children()
    inputs = SplitInputs(split, t, num_workers=2)
    epoch1 = list(inputs.batches(_batches(len(split), 3), augment=(0, 1)))
    workers = _children() - before
    assert len(workers) == 2
    epoch2 = list(inputs.batches(_batches(len(split), 3), augment=(0, 2)))
    evaluated = list(inputs.sequential(4))
    assert _children() - before == workers  # the same two processes served every pass
    fresh = SplitInputs(split, t, num_workers=0)
    assert _equal(epoch1, list(fresh.batches(_batches(len(split), 3), augment=(0, 1))))
    assert _equal(epoch2, list(fresh.batches(_batches(len(split), 3), augment=(0, 2))))
    assert _equal(evaluated, list(fresh.sequential(4))) and not _equal(epoch1, epoch2)
    del inputs
    gc.collect()
    for p in multiprocessing.active_children():  # joins the workers that have exited
        if p.pid in workers:
            p.join(timeout=10)
    assert not (_children() & workers)


def test_nested_and_abandoned_passes_stay_correct():
    """A pass started while another is being consumed gets its own workers; a pass left unfinished
    does not leak its prefetched batches into the next one."""
    split = _cifar_like(12)
    t = ClassificationTransform(28, 1.0, "flip")
    expected = list(SplitInputs(split, t, num_workers=0).batches(_batches(12, 3), augment=(0, 1)))
    evaluated = list(SplitInputs(split, t, num_workers=0).sequential(5))
    inputs = SplitInputs(split, t, num_workers=2)
    outer = inputs.batches(_batches(12, 3), augment=(0, 1))
    first = next(outer)
    assert _equal(list(inputs.sequential(5)), evaluated)  # nested pass
    assert _equal([first, *outer], expected)
    abandoned = inputs.sequential(5)
    next(abandoned)
    del abandoned  # closed with batches still in flight
    assert _equal(list(inputs.batches(_batches(12, 3), augment=(0, 1))), expected)


# --- segmentation evaluation ---------------------------------------------------------------------

def _seg_split(tmp_path) -> ImageFiles:
    """JPEGs of different sizes with greyscale label PNGs (classes 0–3, some 255 = ignore)."""
    rng = np.random.default_rng(12)
    paths, masks = [], []
    for k, (h, w) in enumerate([(20, 28), (31, 17), (24, 24), (18, 40), (29, 22)]):
        image = fx.smooth_image(rng, h, w)
        mask = (image[..., 0] // 64).astype(np.uint8)  # labels follow the pixels, so a head can learn them
        mask[rng.random((h, w)) < 0.1] = 255
        paths.append(str(tmp_path / f"{k}.jpg"))
        masks.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(image).save(paths[-1], quality=90)
        Image.fromarray(mask).save(masks[-1])
    return ImageFiles(tuple(paths), np.zeros(len(paths), dtype=np.int64), tuple(masks))


def _head() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 4, kernel_size=1)


def test_segmentation_metrics_identical_for_0_and_2_workers(tmp_path):
    split = _seg_split(tmp_path)
    head = _head()
    args = (split, 4, 255, (24, 16), 16, 8, torch.device("cpu"))
    zero = evaluate_segmentation(head, *args, num_workers=0)
    two = evaluate_segmentation(head, *args, num_workers=2)
    assert zero == two and zero["n"] == 5 and 0.0 < zero["aAcc"] < 1.0

    # the protocol itself, image by image as it ran before the loader: same numbers
    acc = IoUAccumulator(4, 255)
    for i in range(len(split)):
        label = torch.from_numpy(split.mask(i).astype("int64"))
        image = keep_ratio_resize(to_model_input(split.image(i)), (24, 16))[None]
        logits = F.interpolate(slide_inference(head, image, 4, (16, 16), (8, 8)), size=tuple(label.shape), mode="bilinear", align_corners=False)
        acc.update(logits.argmax(1)[0], label)
    assert zero == {**acc.compute(), "n": 5}


def test_setting_tokens_releases_the_pixel_workers():
    """The frozen-prefix cache computes tokens with one pass over the pixels, then serves batches
    from the tokens: the workers that decoded the pixels are not kept idle for the whole run."""
    split = _cifar_like()
    before = _children()
    inputs = SplitInputs(split, ClassificationTransform(28, 1.0), num_workers=2)
    tokens = torch.cat(list(inputs.sequential(4))).flatten(1)
    workers = _children() - before
    assert len(workers) == 2
    inputs.tokens = tokens
    gc.collect()
    for p in multiprocessing.active_children():
        if p.pid in workers:
            p.join(timeout=10)
    assert not (_children() & workers)
    assert torch.equal(torch.cat(list(inputs.sequential(3))), tokens)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # more workers than this machine's CPUs: intended here
def test_pool_has_at_most_one_worker_per_batch():
    """A worker builds whole batches: a one-batch pass starts no process, a 3-batch pass at most 3,
    and a later, longer pass gets a pool sized for it — with the same batches throughout."""
    split = _cifar_like(12)
    t = ClassificationTransform(28, 1.0)
    expected = list(SplitInputs(split, t, num_workers=0).sequential(4))
    before = _children()
    inputs = SplitInputs(split, t, num_workers=8)
    assert torch.equal(next(iter(inputs.sequential(12))), torch.cat(expected)) and _children() == before
    short = list(inputs.batches([torch.arange(0, 6), torch.arange(6, 12)]))
    assert len(_children() - before) == 2 and torch.equal(torch.cat(short), torch.cat(expected))
    assert _equal(list(inputs.sequential(4)), expected) and len(_children() - before) >= 3


SIGNALS = {"USR2": signal.SIGUSR2, "TERM": signal.SIGTERM, "USR1": signal.SIGUSR1}


class HandlersSeen(torch.utils.data.Dataset):
    """One item: what each signal's handler is in the process that loads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict[str, str]:
        def name(handler) -> str:
            return "ignored" if handler == signal.SIG_IGN else getattr(handler, "__qualname__", repr(handler))

        return {key: name(signal.getsignal(sig)) for key, sig in SIGNALS.items()}


def test_loader_workers_leave_submitits_signal_handlers_to_the_main_process():
    """Slurm signals every process of a job step. DataLoader workers are forked with submitit's
    handlers; one that ran the time-limit handler raced the main process for submitit's
    checkpoint file, and the job failed instead of being requeued. Workers now ignore submitit's
    signals (the handlers installed here are the bound methods submitit installs) and keep any
    other handler."""
    from submitit.core.job_environment import SignalHandler

    submitits = SignalHandler.__new__(SignalHandler)  # only its bound methods are needed

    def our_own(signum, frame) -> None:
        pass

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS.values()}
    try:
        signal.signal(signal.SIGUSR2, submitits.checkpoint_and_try_requeue)
        signal.signal(signal.SIGTERM, submitits.bypass)
        signal.signal(signal.SIGUSR1, our_own)
        here = HandlersSeen()[0]
        (in_worker,) = data_loader(HandlersSeen(), batch_size=None, num_workers=1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert here == {"USR2": "SignalHandler.checkpoint_and_try_requeue", "TERM": "SignalHandler.bypass",
                    "USR1": f"{our_own.__qualname__}"}
    assert in_worker == {"USR2": "ignored", "TERM": "ignored", "USR1": here["USR1"]}

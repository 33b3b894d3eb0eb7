"""Classification transforms against torchvision's PIL pipeline; paired segmentation transforms;
sliding-window inference; deterministic augmented batches for any worker count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from bench.data import DATASETS
from bench.data.base import IMAGENET_MEAN, IMAGENET_STD, normalize, to_model_input, to_pixels
from bench.data.seg_transforms import SegTrainTransform, keep_ratio_resize, keep_ratio_size, slide_inference, window_boxes
from bench.data.transforms import ClassificationTransform, random_resized_crop_box
from bench.features import SplitInputs
import data_fixtures as fx


def _photo(h: int, w: int, name: str = "astronaut") -> np.ndarray:
    """The top-left (h, w) of a skimage photo; ``thumb:<name>`` downsamples the whole photo to
    (h, w) instead (a CIFAR-like image, textured everywhere, not a 32 px patch of background)."""
    import skimage.data

    if name.startswith("thumb:"):
        whole = Image.fromarray(getattr(skimage.data, name[6:])())
        return np.asarray(whole.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)).copy()
    img = np.ascontiguousarray(getattr(skimage.data, name)()[:h, :w])
    assert img.shape == (h, w, 3)
    return img


TO_TENSOR_NORMALIZE = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _grey_levels(ours: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """|ours − reference| in 0–255 grey levels (undoing the normalisation's 1/std)."""
    return (ours - reference).abs() * torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255


# Both pipelines resample uint8 with a bicubic kernel and round to uint8; torchvision's and PIL's
# fixed-point arithmetic round a minority of pixels differently, by one level (two where a
# rounding lands on both kernel passes). Anything else — a pixel of geometry, a wrong resize
# size, a double normalisation — moves the mean by far more than these bounds.
MAX_GREY, MEAN_GREY = 2.0 + 1e-3, 0.35


def test_normalize_is_totensor_then_normalize_bitwise():
    img = _photo(37, 53)
    assert torch.equal(normalize(to_pixels(img)), TO_TENSOR_NORMALIZE(Image.fromarray(img)))
    assert torch.equal(to_model_input(img), normalize(to_pixels(img))) and normalize(to_pixels(img)).is_contiguous()
    with pytest.raises(TypeError, match="uint8"):
        normalize(to_model_input(img))


@pytest.mark.parametrize("size,crop_pct,shape,name", [
    (224, 0.875, (300, 420), "astronaut"),  # ImageNet-like downscale
    (224, 0.875, (300, 410), "astronaut"),  # long side 349.9: torchvision truncates to 349 (rounding would shift the crop)
    (224, 0.875, (375, 500), "coffee"),
    (224, 0.875, (32, 32), "thumb:chelsea"),  # CIFAR-shaped upscale, as the CIFAR suites run it
    (112, 1.0, (300, 451), "chelsea"),
])
def test_eval_transform_matches_torchvision_dinov2_pipeline(size, crop_pct, shape, name):
    """DINOv2's eval transform: Resize(256, bicubic) → CenterCrop(224) → ToTensor → Normalize on PIL."""
    img = _photo(*shape, name)
    reference = T.Compose([
        T.Resize(round(size / crop_pct), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), TO_TENSOR_NORMALIZE,
    ])(Image.fromarray(img))
    ours = ClassificationTransform(size, crop_pct).eval(to_pixels(img))
    assert ours.shape == reference.shape == (3, size, size) and ours.dtype == torch.float32
    diff = _grey_levels(ours, reference)
    assert diff.max() <= MAX_GREY and diff.mean() <= MEAN_GREY, (diff.max(), diff.mean())
    shifted = ClassificationTransform(size, crop_pct).eval(to_pixels(img[:, 2:]))  # a 1 px shift is far outside the bounds
    assert _grey_levels(shifted, reference).mean() > 5 * MEAN_GREY


@pytest.mark.parametrize("seed", range(6))
def test_random_resized_crop_matches_torchvision_on_the_same_box(seed):
    """rrc_flip = RandomResizedCrop(bicubic) + flip: our uint8 resized crop against PIL's on the box
    our generator drew (torchvision draws its boxes from the global RNG, so boxes are shared here)."""
    img = _photo(300, 451, "chelsea")
    t = ClassificationTransform(224, 0.875, "rrc_flip")
    box = random_resized_crop_box(*img.shape[:2], torch.Generator().manual_seed(seed))
    ours = t.train(to_pixels(img), torch.Generator().manual_seed(seed))
    import torchvision.transforms.functional as F1

    reference = TO_TENSOR_NORMALIZE(F1.resized_crop(Image.fromarray(img), *box, [224, 224], T.InterpolationMode.BICUBIC))
    plain, flipped = _grey_levels(ours, reference), _grey_levels(ours, reference.flip(-1))
    diff = min(plain, flipped, key=lambda d: float(d.mean()))
    assert diff.max() <= MAX_GREY and diff.mean() <= MEAN_GREY, (box, diff.max(), diff.mean())
    assert max(plain.mean(), flipped.mean()) > 5 * MEAN_GREY  # flipped or not is decided, not blurred


@pytest.mark.parametrize("size,crop_pct,shape", [(224, 0.875, (300, 420)), (112, 1.0, (28, 28)), (98, 0.875, (96, 96))])
def test_eval_transform_sizes(size, crop_pct, shape):
    t = ClassificationTransform(size, crop_pct)
    out = t.eval(torch.zeros(2, 3, *shape, dtype=torch.uint8))
    assert out.shape == (2, 3, size, size) and size % 14 == 0
    assert t.resize_size == round(size / crop_pct)


def test_transforms_refuse_normalised_input():
    """Float input would be resized fine and then normalised a second time: it is an error."""
    t = ClassificationTransform(28, 1.0, "rrc_flip")
    with pytest.raises(TypeError, match="uint8"):
        t.eval(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        t.train(torch.zeros(3, 32, 32), torch.Generator().manual_seed(0))


def test_batched_eval_equals_image_by_image():
    """In-memory splits resize a whole batch in one call; each image must come out as alone."""
    batch = np.stack([_photo(32, 32, "astronaut"), _photo(32, 32, "chelsea"), _photo(32, 32, "coffee")])
    t = ClassificationTransform(56, 0.875)
    together = t.eval(to_pixels(batch))
    assert all(torch.equal(together[k], t.eval(to_pixels(batch[k]))) for k in range(3))


def test_train_augmentation_is_seeded_and_flips():
    x = to_pixels(_photo(120, 160))
    t = ClassificationTransform(56, 0.875, "rrc_flip")
    a = t.train(x, torch.Generator().manual_seed(1))
    b = t.train(x, torch.Generator().manual_seed(1))
    c = t.train(x, torch.Generator().manual_seed(2))
    assert a.shape == (3, 56, 56) and torch.equal(a, b) and not torch.equal(a, c)
    flips = [ClassificationTransform(56, 1.0, "flip").train(x, torch.Generator().manual_seed(s)) for s in range(16)]
    plain = ClassificationTransform(56, 1.0).eval(x)
    n_flipped = sum(torch.equal(f, plain.flip(-1)) for f in flips)
    assert sum(torch.equal(f, plain) for f in flips) + n_flipped == 16 and 2 <= n_flipped <= 14


def test_keep_ratio_resize_follows_mmseg_scale_rule():
    assert keep_ratio_size(375, 500, (2048, 512)) == (512, 683)  # short side to 512 (long side fits 2048)
    assert keep_ratio_size(100, 1000, (2048, 512)) == (205, 2048)  # long side caps first
    assert keep_ratio_resize(torch.zeros(3, 375, 500)).shape == (3, 512, 683)


def test_paired_train_transform_keeps_image_and_mask_aligned():
    h, w = 60, 90
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = ((yy // 10) * 3 + (xx // 15) * 7 % 11).remainder(9).to(torch.uint8)  # asymmetric blocks
    image = mask.float()[None].repeat(3, 1, 1)  # the image carries its own labels: misalignment shows
    t = SegTrainTransform(crop=(32, 48), scale=(90, 60), ratio_range=(0.5, 2.0), cat_max_ratio=0.75)
    misaligned = []
    for seed in range(8):
        img, m = t(image, mask, torch.Generator().manual_seed(seed))
        assert img.shape == (3, 32, 48) and m.shape == (32, 48)
        valid = m != 255
        agree = (img[0][valid].round().to(torch.uint8) == m[valid]).float().mean()
        assert agree > 0.8, (seed, agree)  # only block borders blend under bilinear resizing
        assert (img[:, ~valid] == 0).all()  # padding: image 0, mask ignore
        both = valid & valid.flip(-1)
        misaligned.append((img[0].flip(-1)[both].round().to(torch.uint8) == m[both]).float().mean())
    assert np.mean(misaligned) < 0.6  # the agreement measure does detect an image flipped without its mask


def test_random_crop_respects_cat_max_ratio():
    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[:, 40:] = 1  # a 16-px window holds both classes with neither above 75% for 9 of 49 offsets

    def balanced(ratio: float) -> int:
        t = SegTrainTransform(crop=(16, 16), cat_max_ratio=ratio)
        ok = 0
        for seed in range(20):
            _, window = t.random_crop(torch.zeros(3, 64, 64), mask, torch.Generator().manual_seed(seed))
            counts = window.unique(return_counts=True)[1]
            ok += int(len(counts) == 2 and counts.max() / counts.sum() < 0.75)
        return ok

    assert balanced(0.75) >= 14 and balanced(1.0) <= 8  # up to 10 retries (mmseg) vs a single draw


def test_sliding_window_equals_whole_image_for_a_per_pixel_head():
    torch.manual_seed(0)
    head = torch.nn.Conv2d(3, 7, kernel_size=1)
    image = torch.randn(2, 3, 50, 70)
    whole = head(image)
    slid = slide_inference(head, image, 7, crop=(32, 32), stride=(20, 20))
    assert torch.allclose(slid, whole, atol=1e-5)
    boxes = window_boxes(50, 70, (32, 32), (20, 20))
    cover = torch.zeros(50, 70)
    for y0, y1, x0, x1 in boxes:
        assert y1 - y0 == 32 and x1 - x0 == 32
        cover[y0:y1, x0:x1] += 1
    assert (cover >= 1).all() and len(boxes) == 2 * 3


def test_augmented_batches_identical_for_any_worker_count(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_ROOT", raising=False)
    fx.write_tiny_imagenet(tmp_path)
    split = DATASETS.get("tiny_imagenet").load("train", tmp_path)
    t = ClassificationTransform(28, 0.875, "rrc_flip")
    indices = [torch.tensor([5, 0, 3]), torch.tensor([1, 4, 2])]
    one = list(SplitInputs(split, t, num_workers=0).batches(indices, augment=(0, 1)))
    two = list(SplitInputs(split, t, num_workers=2).batches(indices, augment=(0, 1)))
    other_epoch = list(SplitInputs(split, t, num_workers=0).batches(indices, augment=(0, 2)))
    assert all(torch.equal(a, b) for a, b in zip(one, two)) and one[0].shape == (3, 3, 28, 28)
    assert not torch.equal(one[0], other_epoch[0])
    plain = list(SplitInputs(split, t).batches(indices))
    assert torch.equal(plain[0][1], t.eval(to_pixels(split.image(0))))

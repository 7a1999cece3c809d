"""Training data: a bank of pre-generated scenes and the samplers that cut batches out of it.

Scenes are rendered once per run and kept in memory (a 2048² RGB scene is 12.6 MB); every step
then cuts fresh windows out of them — saliency windows of the downscaled frame, detector crops
around objects, at saliency peaks (hard negatives: what the pipeline will actually look at) and at
random places — with a random flip/transpose. Nothing is cached on disk.

Only ``image``, ``boxes`` and ``labels`` of a scene are used, so any generator (or hand-made
test scenes) works.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
import torch

from ..core.resize import saliency_input
from ..core.selection import select_crops
from .targets import centernet_targets

HELD_OUT_FIRST_SEED = 1_000_000  # scenes with seed >= this are for evaluation only

MaskFn = Callable[[np.ndarray, tuple[int, int], tuple[int, int]], np.ndarray]


class SceneLike(Protocol):
    """What training needs of a scene (``train.scenes.Scene`` has it)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 x1y1x2y2 frame pixels
    labels: np.ndarray  # (N,) int64 class indices


def default_mask_fn() -> MaskFn:
    """The generator's oracle mask (imported late: the generator is optional for unit tests)."""
    from .scenes import oracle_mask

    return oracle_mask


@dataclass
class BankItem:
    """One scene plus what every stage reuses: its downscaled frame and its oracle mask."""

    image: np.ndarray  # (H, W, 3) uint8 full resolution
    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64
    small: np.ndarray  # (h, w, 3) uint8 saliency input
    mask: np.ndarray  # (h/4, w/4) float32 oracle saliency mask
    peaks: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))  # (P, 4)
    domain: str = ""  # the generator's domain, "" when the scene does not say


class SceneBank:
    """Scenes held in memory for a whole training run."""

    def __init__(
        self,
        scenes: Iterable[SceneLike],
        saliency_input_size: int,
        mask_fn: MaskFn | None = None,
        stride: int = 4,
    ) -> None:
        mask_fn = mask_fn or default_mask_fn()
        self.saliency_input_size = saliency_input_size
        self.items: list[BankItem] = []
        for sc in scenes:
            image = _rgb(sc.image)
            small = saliency_input(image, saliency_input_size)  # as the pipeline makes it
            out_hw = (small.shape[0] // stride, small.shape[1] // stride)
            boxes = np.asarray(sc.boxes, np.float32).reshape(-1, 4)
            mask = mask_fn(boxes, image.shape[:2], out_hw).astype(np.float32)
            labels = np.asarray(sc.labels, np.int64).reshape(-1)
            domain = str(getattr(sc, "domain", ""))
            self.items.append(BankItem(image, boxes, labels, small, mask, domain=domain))
        if not self.items:
            raise ValueError("a SceneBank needs at least one scene")

    def __len__(self) -> int:
        return len(self.items)

    def item_weights(self, domain_weights: dict[str, float]) -> np.ndarray | None:
        """Per-item sampling probabilities (N,) that give each domain its share of
        ``domain_weights`` (domains not named keep weight 1); None when that is uniform."""
        if not domain_weights:
            return None
        doms = [it.domain for it in self.items]
        counts = {d: doms.count(d) for d in set(doms)}
        w = np.array([domain_weights.get(d, 1.0) / counts[d] for d in doms], np.float64)
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"domain weights must be >= 0 and not all 0, got {domain_weights}")
        return w / w.sum()

    @property
    def num_objects(self) -> int:
        return sum(len(it.boxes) for it in self.items)

    def update_peaks(
        self, saliency_fn: Callable[[torch.Tensor], torch.Tensor], k: int, crop_size: int
    ) -> None:
        """Record each scene's top-K saliency windows: the hard negatives (and positives) the
        pipeline would look at with the current saliency net."""
        for it in self.items:
            x = torch.from_numpy(it.small).permute(2, 0, 1)[None].float()  # (1, 3, h, w)
            with torch.no_grad():
                sal = torch.sigmoid(saliency_fn(x).float())[0, 0].cpu().numpy()  # (h/4, w/4)
            it.peaks, _ = select_crops(sal, it.image.shape[:2], k, crop_size)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.dtype != np.uint8 or image.shape[2] != 3:
        raise ValueError(f"scene images must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


# -- scene generation ------------------------------------------------------------------------
def _make(args: tuple[int, str | None, tuple[int, int]]) -> SceneLike:
    from .scenes import make_scene

    seed, domain, size = args
    return make_scene(seed, domain=domain, size=size)


def generate_scenes(
    first_seed: int,
    count: int,
    domains: Sequence[str] | None = None,
    size: tuple[int, int] = (2048, 2048),
    workers: int = 1,
    progress: bool = True,
) -> list[SceneLike]:
    """Render ``count`` training scenes, cycling through ``domains`` so each is equally present.

    Refuses held-out seeds. ``workers`` > 1 renders in a process pool (pays off only when the
    generator is pure-python-bound; on 2 cores it roughly halves the wait).
    """
    if first_seed < 0 or first_seed + count > HELD_OUT_FIRST_SEED:
        raise ValueError(
            f"training seeds {first_seed}..{first_seed + count - 1} overlap the held-out range "
            f">= {HELD_OUT_FIRST_SEED}"
        )
    from tqdm import tqdm

    doms: list[str | None] = list(domains) if domains else [None]
    jobs = [(first_seed + i, doms[i % len(doms)], size) for i in range(count)]
    bar = tqdm(total=count, desc="scenes", unit="scene", disable=not progress)
    out: list[SceneLike] = []
    if workers > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers) as pool:
            for sc in pool.imap(_make, jobs, chunksize=4):
                out.append(sc)
                bar.update()
    else:
        for job in jobs:
            out.append(_make(job))
            bar.update()
    bar.close()
    return out


# -- augmentation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Dihedral:
    """One of the 8 flips/transposes of a square grid: free augmentation for overhead imagery."""

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator) -> Dihedral:
        t, fx, fy = (bool(v) for v in rng.integers(0, 2, size=3))
        return cls(t, fx, fy)

    def image(self, img: np.ndarray) -> np.ndarray:
        """(H, W, ...) -> transformed view (H and W swap when transposed)."""
        if self.transpose:
            img = img.swapaxes(0, 1)
        if self.flip_x:
            img = img[:, ::-1]
        if self.flip_y:
            img = img[::-1]
        return img

    def boxes(self, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Boxes (N, 4) in an image of size hw (before the transform) -> transformed boxes."""
        b = boxes.astype(np.float32, copy=True)
        h, w = hw
        if self.transpose:
            b = b[:, [1, 0, 3, 2]]
            h, w = w, h
        if self.flip_x:
            b[:, [0, 2]] = w - b[:, [2, 0]]
        if self.flip_y:
            b[:, [1, 3]] = h - b[:, [3, 1]]
        return b


#: (gain (B, 3, 1, 1), bias (B, 1, 1, 1)) of one batch's photometric jitter
Photometric = tuple[np.ndarray, np.ndarray]


def photometric_params(batch: int, rng: np.random.Generator, strength: float = 0.15) -> Photometric:
    """Per-image gain (B, 3, 1, 1) and bias (B, 1, 1, 1) of ``apply_photometric``: drawn apart
    from applying them, so a batch-making thread can draw them with the batch."""
    gain = rng.uniform(1 - strength, 1 + strength, (batch, 1, 1, 1))
    gain = gain * rng.uniform(1 - strength / 3, 1 + strength / 3, (batch, 3, 1, 1))  # colour cast
    bias = rng.uniform(-100 * strength, 100 * strength, (batch, 1, 1, 1))
    return gain, bias


def apply_photometric(x: torch.Tensor, gain: np.ndarray, bias: np.ndarray) -> torch.Tensor:
    """Contrast/brightness/colour jitter of float images (B, 3, H, W) 0..255 about each image's
    mean, with ``photometric_params``' gain and bias."""
    g = torch.from_numpy(gain).float().to(x.device)
    b = torch.from_numpy(bias).float().to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * g + mean + b).clamp_(0, 255)


def photometric(x: torch.Tensor, rng: np.random.Generator, strength: float = 0.15) -> torch.Tensor:
    """Per-image contrast/brightness jitter plus a slight colour cast, on float images
    (B, 3, H, W) 0..255: cheap diversity beyond the generator's own variation."""
    return apply_photometric(x, *photometric_params(x.shape[0], rng, strength))


def to_nchw(batch: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) 0..255 in channels_last memory (a free permute)."""
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float()


# -- samplers -------------------------------------------------------------------------------
@dataclass
class SaliencyBatch:
    images: torch.Tensor  # (B, 3, S, S) float 0..255
    masks: torch.Tensor  # (B, 1, S/4, S/4) float {0, 1}


def sample_saliency_batch(
    bank: SceneBank,
    rng: np.random.Generator,
    batch: int,
    window: int,
    object_bias: float = 0.5,
    stride: int = 4,
) -> SaliencyBatch:
    """Random ``window``² windows of downscaled frames (fully convolutional: training on 256²
    windows of the 512² input is 4x cheaper per step and more varied); half are centred near an
    object so positives are not starved."""
    align = 16  # keep windows on the backbone's stride-16 grid
    imgs, masks = [], []
    for _ in range(batch):
        it = bank.items[int(rng.integers(len(bank)))]
        h, w = it.small.shape[:2]
        win = min(window, h, w) // align * align
        scale = it.small.shape[1] / it.image.shape[1]
        if len(it.boxes) and rng.random() < object_bias:
            b = it.boxes[int(rng.integers(len(it.boxes)))]
            cx, cy = (b[0] + b[2]) / 2 * scale, (b[1] + b[3]) / 2 * scale
            x0 = cx - rng.uniform(0.1, 0.9) * win
            y0 = cy - rng.uniform(0.1, 0.9) * win
        else:
            x0, y0 = rng.uniform(0, w - win), rng.uniform(0, h - win)
        x0 = int(np.clip(round(x0 / align) * align, 0, (w - win) // align * align))
        y0 = int(np.clip(round(y0 / align) * align, 0, (h - win) // align * align))
        aug = Dihedral.random(rng)
        imgs.append(np.ascontiguousarray(aug.image(it.small[y0 : y0 + win, x0 : x0 + win])))
        m = it.mask[y0 // stride : (y0 + win) // stride, x0 // stride : (x0 + win) // stride]
        masks.append(np.ascontiguousarray(aug.image(m)))
    images = to_nchw(np.stack(imgs))  # (B, 3, S, S)
    target = torch.from_numpy(np.stack(masks))[:, None]  # (B, 1, S/4, S/4)
    return SaliencyBatch(images, target)


@dataclass
class DetectorBatch:
    images: torch.Tensor  # (B, 3, S, S) float 0..255
    heat: torch.Tensor  # (B, C, S/4, S/4)
    size: torch.Tensor  # (B, 2, S/4, S/4)
    offset: torch.Tensor  # (B, 2, S/4, S/4)
    reg_mask: torch.Tensor  # (B, S/4, S/4)


def cut_crop(image: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    """Window ``box`` (x1, y1, x2, y2) of ``image`` zero-padded to size² (frames smaller than the
    crop are padded exactly like the pipeline pads them)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    out = np.zeros((size, size, 3), np.uint8)
    out[: y2 - y1, : x2 - x1] = image[y1:y2, x1:x2]
    return out


def boxes_in_window(
    boxes: np.ndarray, labels: np.ndarray, win: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) whose centre lies in window ``win``, translated to window pixels."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4), labels
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    keep = (cx >= win[0]) & (cx < win[2]) & (cy >= win[1]) & (cy < win[3])
    off = np.array([win[0], win[1], win[0], win[1]], np.float32)
    return boxes[keep] - off, labels[keep]


def detector_sample(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    win: Sequence[int],
    crop: int,
    num_classes: int,
    aug: Dihedral,
    stride: int = 4,
    src: int | None = None,
    box_fraction: float = 0.0,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One crop and its CenterNet targets (after the dihedral augmentation).

    ``win`` is crop² (smaller only in frames smaller than the crop: zero-padded, as the pipeline
    does). With ``src`` set, ``win`` is src² and is resized to crop², boxes with it: a scale
    augmentation, so the detector sees each object at more sizes than the scenes draw it.
    ``box_fraction`` is passed to ``centernet_targets``.
    """
    scaled = src is not None and src != crop
    src = src if scaled else crop
    img = cut_crop(image, win, src)  # (src, src, 3)
    b, lab = boxes_in_window(boxes, labels, win)
    if scaled:
        interp = cv2.INTER_AREA if src > crop else cv2.INTER_LINEAR
        img = cv2.resize(img, (crop, crop), interpolation=interp)
        b = b * np.float32(crop / src)
    img = np.ascontiguousarray(aug.image(img))
    b = aug.boxes(b, (crop, crop))
    out_hw = (crop // stride, crop // stride)
    t = centernet_targets(b, lab, out_hw, num_classes, stride, box_fraction=box_fraction)
    return img, (t.heat, t.size, t.offset, t.reg_mask)


def collate_detector(
    samples: list[tuple[np.ndarray, tuple[np.ndarray, ...]]],
) -> DetectorBatch:
    imgs = to_nchw(np.stack([s[0] for s in samples]))  # (B, 3, S, S)
    parts = [torch.from_numpy(np.stack([s[1][i] for s in samples])) for i in range(4)]
    return DetectorBatch(imgs, *parts)


def _window_around(
    cx: float, cy: float, crop: int, frame_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A crop² window holding (cx, cy) at a random position (kept inside the frame)."""
    fh, fw = frame_hw
    ch, cw = min(crop, fh), min(crop, fw)
    margin = min(8.0, crop / 8)
    x1 = cx - rng.uniform(margin, max(margin, cw - margin))
    y1 = cy - rng.uniform(margin, max(margin, ch - margin))
    x1 = int(np.clip(round(x1), 0, fw - cw))
    y1 = int(np.clip(round(y1), 0, fh - ch))
    return x1, y1, x1 + cw, y1 + ch


def sample_detector_batch(
    bank: SceneBank,
    rng: np.random.Generator,
    batch: int,
    crop: int,
    num_classes: int,
    mix: tuple[float, float, float] = (0.6, 0.25, 0.15),
    scale_range: tuple[float, float] = (1.0, 1.0),
    box_fraction: float = 0.0,
    stride: int = 4,
    item_p: np.ndarray | None = None,
) -> DetectorBatch:
    """Crops with a (objects, saliency peaks, random background) mix.

    Object crops teach the detector what to find; peak crops are where the trained saliency net
    fires — including distractors it confuses with objects — so the detector learns to reject
    them; random crops cover plain background. Each crop is zoomed by a log-uniform factor in
    ``scale_range`` (a window of crop / factor pixels resized to crop²). ``stride`` is the
    detector's output stride (targets are built at crop / stride). ``item_p`` (N,) weights the
    scenes (``SceneBank.item_weights``); None draws them uniformly.
    """
    p = np.asarray(mix, np.float64) / sum(mix)
    log_lo, log_hi = np.log(scale_range[0]), np.log(scale_range[1])
    samples = []
    out_crop = crop
    for _ in range(batch):
        i = int(rng.integers(len(bank))) if item_p is None else int(rng.choice(len(bank), p=item_p))
        it = bank.items[i]
        fh, fw = it.image.shape[:2]
        factor = float(np.exp(rng.uniform(log_lo, log_hi))) if log_hi > log_lo else 1.0
        crop = round(out_crop / factor)
        if crop > min(fh, fw):  # small frames: no zoom-out beyond the frame
            crop = out_crop
        kind = int(rng.choice(3, p=p))
        if kind == 0 and len(it.boxes):
            b = it.boxes[int(rng.integers(len(it.boxes)))]
            win = _window_around((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, crop, (fh, fw), rng)
        elif kind == 1 and len(it.peaks):
            pk = it.peaks[int(rng.integers(len(it.peaks)))]
            jitter = rng.uniform(-crop / 4, crop / 4, 2)
            cx, cy = (pk[0] + pk[2]) / 2 + jitter[0], (pk[1] + pk[3]) / 2 + jitter[1]
            win = _window_around(cx, cy, crop, (fh, fw), rng)
        else:
            win = _window_around(rng.uniform(0, fw), rng.uniform(0, fh), crop, (fh, fw), rng)
        samples.append(
            detector_sample(
                it.image,
                it.boxes,
                it.labels,
                win,
                out_crop,
                num_classes,
                Dihedral.random(rng),
                stride=stride,
                src=crop,
                box_fraction=box_fraction,
            )
        )
    return collate_detector(samples)

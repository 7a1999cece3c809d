"""Training machinery on tiny hand-made scenes and tiny models: fast, and independent of the
scene generator's look (only its geometric ``oracle_mask`` is used)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pdn_perception.core.models import ModelConfig, ModelLoadError, PatchDriveModel, decode
from pdn_perception.core.models.io import light_model_path, load_model, save_model
from pdn_perception.train.checkpoint import load_checkpoint
from pdn_perception.train.data import (
    Dihedral,
    SceneBank,
    generate_scenes,
    sample_detector_batch,
    sample_saliency_batch,
)
from pdn_perception.train.evaluate import coco_ground_truth, coco_metrics
from pdn_perception.train.losses import masked_giou
from pdn_perception.train.targets import centernet_targets
from pdn_perception.train.trainer import STAGES, StageBudget, TrainConfig, Trainer

TINY = ModelConfig(
    classes=("a", "b"),
    saliency_width=4,
    saliency_head_width=8,
    detector_widths=(8, 8, 16, 16),
    detector_neck_width=8,
)


def _oracle_mask(boxes, frame_hw, out_hw):
    from pdn_perception.train.scenes import oracle_mask

    return oracle_mask(boxes, frame_hw, out_hw)


def toy_scene(seed: int, size: int = 256) -> SimpleNamespace:
    """Noisy grey background with a few bright (class 0) and dark (class 1) squares, 6-20 px."""
    rng = np.random.default_rng(seed)
    img = rng.normal(120, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(2, 6))):
        s = int(rng.integers(6, 21))
        x, y = (int(v) for v in rng.integers(4, size - s - 4, 2))
        lab = int(rng.integers(0, 2))
        img[y : y + s, x : x + s] = 235 if lab == 0 else 10
        boxes.append([x, y, x + s, y + s])
        labels.append(lab)
    return SimpleNamespace(
        image=img, boxes=np.array(boxes, np.float32), labels=np.array(labels, np.int64)
    )


@pytest.fixture(scope="module")
def bank() -> SceneBank:
    return SceneBank([toy_scene(i) for i in range(6)], 128, mask_fn=_oracle_mask)


@pytest.mark.parametrize("stride", [4, 2])
def test_centernet_targets_decode_back_to_the_boxes(stride: int) -> None:
    boxes = np.array([[10.3, 20.7, 18.1, 26.2], [100, 100, 148, 130], [200, 50, 207, 60]])
    labels = np.array([0, 2, 1])
    n = 256 // stride
    for aug in (Dihedral(), Dihedral(True, True, False), Dihedral(False, True, True)):
        b = aug.boxes(boxes.astype(np.float32), (256, 256))
        t = centernet_targets(b, labels, (n, n), 3, stride)
        heat = torch.from_numpy(t.heat)[None].clamp(1e-4, 1 - 1e-4)  # (1, 3, n, n)
        size, off = torch.from_numpy(t.size)[None], torch.from_numpy(t.offset)[None]
        out = decode(heat.logit(), size, off, stride, 3)
        got = out[0][0].numpy()  # (3, 4)
        order = np.lexsort((got[:, 1], got[:, 0]))
        want = b[np.lexsort((b[:, 1], b[:, 0]))]
        np.testing.assert_allclose(got[order], want, atol=1e-3)
        assert (t.reg_mask == 1).sum() == 3 and (t.reg_mask > 0).sum() == 27


def test_adjacent_objects_each_keep_the_regression_cells_nearest_to_them() -> None:
    """Two cars two cells apart: each centre cell, and each cell nearer one centre, decodes that
    car's box; the cell halfway stays with the first (a later object needs more weight)."""
    cars = np.array([[16, 16, 28, 26], [24, 16, 36, 26]], np.float32)  # centres 2 cells apart
    t = centernet_targets(cars, np.array([0, 0]), (16, 16), 1)
    cy = 5
    for x, car in ((4, 0), (5, 0), (6, 0), (7, 1), (8, 1)):  # centre cells 5 and 7
        centre = (np.array([x, cy]) + t.offset[:, cy, x]) * 4
        wh = np.exp(t.size[:, cy, x]) * 4
        box = [*(centre - wh / 2), *(centre + wh / 2)]
        np.testing.assert_allclose(box, cars[car], atol=1e-3, err_msg=f"cell {x}")
    assert t.reg_mask[cy, 5] == t.reg_mask[cy, 7] == 1.0
    assert 0.0 < t.reg_mask[cy, 6] < 1.0


def test_box_fraction_stretches_heat_and_regression_along_a_long_box() -> None:
    boat = np.array([[20, 40, 60, 52]], np.float32)  # 40x12 px: 10x3 cells
    plain = centernet_targets(boat, np.array([0]), (32, 32), 1)
    long = centernet_targets(boat, np.array([0]), (32, 32), 1, box_fraction=0.54)
    cy, cx = 11, 10  # the centre cell (46 / 4, 40 / 4)
    assert plain.heat[0, cy, cx] == long.heat[0, cy, cx] == 1.0
    # Soft negatives two cells along the hull, none across it beyond the CenterNet radius.
    assert plain.heat[0, cy, cx + 2] == 0.0 < long.heat[0, cy, cx + 2]
    assert long.heat[0, cy + 2, cx] == plain.heat[0, cy + 2, cx] == 0.0
    # Regression reaches two cells along the hull; every cell decodes the whole box.
    assert plain.reg_mask[cy, cx + 2] == 0.0 < long.reg_mask[cy, cx + 2] < 1.0
    ys, xs = np.nonzero(long.reg_mask)
    for y, x in zip(ys, xs):
        centre = (np.array([x, y]) + long.offset[:, y, x]) * 4
        wh = np.exp(long.size[:, y, x]) * 4
        np.testing.assert_allclose([*(centre - wh / 2), *(centre + wh / 2)], boat[0], atol=1e-3)
    # An object's regression weights never outweigh a 3x3 one (plus its full-weight centre).
    assert long.reg_mask.sum() <= plain.reg_mask.sum() + 1.0
    # Small boxes (2-3 cells) keep exactly the 3x3 targets.
    car = np.array([[100, 100, 109, 111]], np.float32)
    a = centernet_targets(car, np.array([0]), (64, 64), 1)
    b = centernet_targets(car, np.array([0]), (64, 64), 1, box_fraction=0.54)
    for x, y in zip(a.__dict__.values(), b.__dict__.values()):
        np.testing.assert_array_equal(x, y)


def test_dihedral_boxes_follow_the_pixels() -> None:
    img = np.zeros((40, 60), np.uint8)
    img[5:9, 30:50] = 1  # box x1=30, y1=5, x2=50, y2=9
    box = np.array([[30, 5, 50, 9]], np.float32)
    for t in (False, True):
        for fx in (False, True):
            for fy in (False, True):
                aug = Dihedral(t, fx, fy)
                ys, xs = np.nonzero(aug.image(img))
                got = aug.boxes(box, img.shape)[0]
                assert list(got) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_batches_have_the_documented_shapes(bank: SceneBank) -> None:
    rng = np.random.default_rng(0)
    s = sample_saliency_batch(bank, rng, 3, 64)
    assert s.images.shape == (3, 3, 64, 64) and s.masks.shape == (3, 1, 16, 16)
    bank.update_peaks(PatchDriveModel(TINY).saliency.eval(), 4, 64)
    d = sample_detector_batch(bank, rng, 5, 64, 2)
    assert d.images.shape == (5, 3, 64, 64)
    assert d.heat.shape == (5, 2, 16, 16) and d.size.shape == (5, 2, 16, 16)
    assert d.reg_mask.shape == (5, 16, 16)
    assert float(d.heat.max()) == 1.0  # object crops are in the mix


def test_stride_2_detector_trains_and_decodes_at_its_stride(bank: SceneBank) -> None:
    cfg = dataclasses.replace(TINY, detector_stride=2, detector_fine_width=4)
    det = PatchDriveModel(cfg).detector
    assert det.stride == 2
    heat, size, off = det(torch.zeros(2, 3, 64, 64))
    assert heat.shape == (2, 2, 32, 32) and size.shape == off.shape == (2, 2, 32, 32)
    d = sample_detector_batch(bank, np.random.default_rng(0), 3, 64, 2, stride=2)
    assert d.heat.shape == (3, 2, 32, 32) and d.reg_mask.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="stride must be 2 or 4"):
        dataclasses.replace(TINY, detector_stride=8)


def test_generate_scenes_refuses_held_out_seeds() -> None:
    with pytest.raises(ValueError, match="held-out"):
        generate_scenes(999_999, 2)


@pytest.mark.parametrize("stride", [4, 2])
def test_training_smoke_losses_fall_and_checkpoint_resumes(
    bank: SceneBank, tmp_path, small_train_config, stride: int
) -> None:
    cfg = small_train_config(
        seed=1,
        saliency=StageBudget(steps=40),
        sal_batch=4,
        freeze_backbone_epochs=1,
        detector=StageBudget(steps=40),
        det_batch=8,
        det_peaks=4,
        joint=StageBudget(steps=3),
        warmup_steps=5,
    )
    ckpt = tmp_path / "ckpt.safetensors"
    tiny = dataclasses.replace(TINY, detector_stride=stride, detector_fine_width=8)
    trainer = Trainer(cfg, bank, model_config=tiny, checkpoint_path=ckpt)
    history = trainer.run()
    for stage in ("saliency", "detector"):
        assert history[stage]["last_loss"] < 0.8 * history[stage]["first_loss"], history
    assert history["joint"]["steps"] == 3 and np.isfinite(history["joint"]["last_loss"])
    assert not trainer.model.training

    ck = load_checkpoint(ckpt)
    assert ck.state.done == ["saliency", "detector", "joint"]
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v), k
    # A resumed run with everything done trains nothing and keeps the weights.
    again = Trainer(cfg, bank, model_config=tiny, checkpoint_path=ckpt)
    again.resume_from(ckpt)
    assert again.run() == history
    assert torch.equal(again.model.detector.heat.weight, trainer.model.detector.heat.weight)


def test_resume_mid_stage_continues_the_step_count(
    bank: SceneBank, tmp_path, small_train_config
) -> None:
    cfg = small_train_config(
        saliency=StageBudget(steps=6),
        detector=StageBudget(),
        joint=StageBudget(),
        checkpoint_every_s=0.0,  # checkpoint after every step
    )
    ckpt = tmp_path / "ckpt.safetensors"
    Trainer(cfg, bank, model_config=TINY, checkpoint_path=ckpt).run()
    # Fake a run killed after step 3 of the saliency stage: rewrite the state of a checkpoint.
    first = Trainer(
        TrainConfig.from_dict({**cfg.to_dict(), "saliency": {"steps": 3, "minutes": 0.0}}),
        bank,
        model_config=TINY,
        checkpoint_path=ckpt,
    )
    first.state.stage, first.state.step = "saliency", 3
    first._save(torch.optim.AdamW(first.model.saliency.parameters()))
    resumed = Trainer(cfg, bank, model_config=TINY, checkpoint_path=ckpt)
    resumed.resume_from(ckpt)
    assert resumed.state.step == 3
    assert resumed.run()["saliency"]["steps"] == 6


class _Killed(RuntimeError):
    pass


def _quadratic_stage(
    trainer: Trainer, steps: int, kill_at: int | None = None, budget: StageBudget | None = None
) -> list[dict[str, torch.Tensor]]:
    """Drive ``Trainer._loop`` on the saliency net with a fixed input and a deterministic loss
    (no sampling), recording the weights each step starts from; ``kill_at`` raises there, as
    a killed process would stop."""
    net = trainer.model.saliency
    x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    seen: list[dict[str, torch.Tensor]] = []

    def step(i: int, _batch: None) -> tuple[torch.Tensor, dict[str, float]]:
        if i == kill_at:
            raise _Killed
        seen.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return (net(x).float() - 1.0).pow(2).mean(), {}

    trainer._loop("saliency", budget or StageBudget(steps=steps), net, 1e-2, step)
    return seen


def test_a_time_cap_leaves_the_schedule_alone_where_the_steps_fit() -> None:
    """The default budgets carry a time cap; on a machine fast enough the schedule must be the
    step schedule exactly (so the command reproduces the shipped model), and on a slow one it
    must reach 1 at the cap, continuously (no jump in the learning rate)."""
    cap = StageBudget(steps=1000, max_minutes=10.0)  # fits at any pace <= 0.6 s a step
    plain = StageBudget(steps=1000)
    for pace in (0.1, 0.3, 0.6):  # seconds a step, plus a slow first step
        for step in range(0, 1001, 50):
            t = 5.0 + pace * step
            if t <= 600:
                assert cap.progress(step, t) == plain.progress(step, t)
    slow = [cap.progress(step, 1.2 * step) for step in range(0, 501)]  # 1.2 s a step
    assert slow[-1] == 1.0 and slow[250] == pytest.approx(0.25)  # step-led until half the cap
    steps = np.diff(slow)
    assert steps.min() >= 0 and steps.max() < 0.005  # monotonic, no jump in the rate
    with pytest.raises(ValueError, match="max_minutes caps a step budget"):
        StageBudget(max_minutes=3.0)
    default = TrainConfig()
    assert all(getattr(default, s).steps and getattr(default, s).max_minutes for s in STAGES)


def test_a_time_cap_ends_a_stage_that_would_overrun(bank: SceneBank, small_train_config) -> None:
    trainer = Trainer(small_train_config(), bank, model_config=TINY)
    t0 = time.monotonic()
    # 10^7 steps would take hours: without the cap the stage is killed at step 50000 and fails
    budget = StageBudget(steps=10**7, max_minutes=0.02)
    seen = _quadratic_stage(trainer, 0, kill_at=50_000, budget=budget)
    assert time.monotonic() - t0 >= 1.0  # it ran until near its 1.2 s cap, not to a step count
    assert 0 < len(seen) < 10**7
    assert trainer.state.history["saliency"]["steps"] == len(seen)


def test_pdn_train_budgets_default_to_capped_steps_and_flags_replace_them() -> None:
    from pdn_perception.cli.train import _stage_budgets, build_parser

    def budgets(*argv: str) -> dict[str, StageBudget]:
        return _stage_budgets(build_parser().parse_args(list(argv)))

    default = TrainConfig()
    assert budgets() == {s: getattr(default, s) for s in STAGES}
    uncapped = budgets("--no-time-cap")
    assert all(uncapped[s] == StageBudget(steps=getattr(default, s).steps) for s in STAGES)
    mixed = budgets("--det-steps", "50")
    assert mixed["detector"] == StageBudget(steps=50) and mixed["joint"] == default.joint
    timed = budgets("--minutes", "10")
    assert timed["detector"] == StageBudget(minutes=7.5) and timed["saliency"].steps == 0


def test_stage_ends_on_the_weight_average_and_a_resume_keeps_it(
    bank: SceneBank, tmp_path, small_train_config
) -> None:
    """EMA changes nothing of the optimisation, only which weights the stage ends on: the
    average of the raw trajectory, rebuilt here by hand; a run killed mid-stage and resumed
    from its checkpoint ends on the same average."""
    decay, steps = 0.6, 6
    raw = Trainer(small_train_config(ema_decay=0.0), bank, model_config=TINY)
    trajectory = _quadratic_stage(raw, steps)
    trajectory.append(raw.model.saliency.state_dict())  # the last step's weights
    expected = {k: v.clone() for k, v in trajectory[0].items()}
    for n, w in enumerate(trajectory[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        for k, v in w.items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()

    cfg = small_train_config(ema_decay=decay, checkpoint_every_s=0.0)
    averaged = Trainer(cfg, bank, model_config=TINY)
    _quadratic_stage(averaged, steps)
    got = averaged.model.saliency.state_dict()
    assert any(
        v.is_floating_point() and not torch.allclose(v, trajectory[-1][k]) for k, v in got.items()
    ), "the stage ended on its last step's weights, not their average"
    for k, v in got.items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6, msg=k)

    ckpt = tmp_path / "ckpt.safetensors"
    killed = Trainer(cfg, bank, model_config=TINY, checkpoint_path=ckpt)
    with pytest.raises(_Killed):
        _quadratic_stage(killed, steps, kill_at=3)
    assert any(k.startswith("ema.") for k in load_checkpoint(ckpt).extra)
    resumed = Trainer(cfg, bank, model_config=TINY, checkpoint_path=ckpt)
    resumed.resume_from(ckpt)
    _quadratic_stage(resumed, steps)
    for k, v in resumed.model.saliency.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ema_decay_is_validated() -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def _tiny_model(seed: int = 0) -> PatchDriveModel:
    torch.manual_seed(seed)
    m = PatchDriveModel(TINY)
    for p in m.parameters():  # make BN affine params non-trivial too
        p.data.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def test_safetensors_round_trip_gives_identical_outputs(tmp_path) -> None:
    model = _tiny_model()
    path = save_model(model, tmp_path / "m.safetensors", extra={"seed": 3, "note": "x"})
    loaded = load_model(path)
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.equal(model.saliency(x), loaded.saliency(x))
        for a, b in zip(model.detector(x), loaded.detector(x)):
            assert torch.equal(a, b)
    assert loaded.config == TINY
    from pdn_perception.core.models.io import model_extra

    assert model_extra(path) == {"seed": 3, "note": "x"}
    assert b"pickle" not in path.read_bytes()[:64] and path.read_bytes()[8:9] == b"{"


def test_corrupt_or_mismatched_files_raise_model_load_error(tmp_path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(ModelLoadError, match="cannot read model file"):
        load_model(garbage)

    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.safetensors")

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelLoadError, match="not a pdn_perception model"):
        load_model(foreign)

    # Weights of the tiny model under a header that declares the default architecture.
    model = _tiny_model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pdn_perception/1", "model_config": json.dumps(ModelConfig().to_dict())}
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(state, str(mismatched), metadata=meta)
    with pytest.raises(ModelLoadError, match="do not match the declared architecture"):
        load_model(mismatched)

    # A header whose architecture cannot exist (zero-depth stage) is refused, not half-built.
    bad_cfg = {**ModelConfig().to_dict(), "detector_depths": [0, 1, 1]}
    invalid = tmp_path / "invalid.safetensors"
    save_file(state, str(invalid), metadata={**meta, "model_config": json.dumps(bad_cfg)})
    with pytest.raises(ModelLoadError, match="widths and depths must be integers >= 1"):
        load_model(invalid)

    truncated = tmp_path / "truncated.safetensors"
    good = save_model(model, tmp_path / "good.safetensors").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError):
        load_model(truncated)


def test_coco_metrics_perfect_and_empty() -> None:
    boxes = np.array([[10, 10, 20, 20], [100, 100, 140, 130]], np.float32)
    gt = coco_ground_truth([((256, 256), boxes, np.array([0, 1]))], ("a", "b"))
    dets = [
        {"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    m = coco_metrics(gt, dets)
    assert m["AP50"] == pytest.approx(1.0) and m["recall50"] == pytest.approx(1.0)
    assert m["AP50_small"] == pytest.approx(1.0)  # 10x10 is small; 40x30 (1200 px²) is not
    assert coco_metrics(gt, [])["recall50"] == 0.0


def test_giou_loss_is_zero_on_exact_boxes_and_grows_with_a_pixel_slip() -> None:
    boxes = np.array([[8, 8, 14, 14], [40, 40, 80, 70]], np.float32)  # 6 px and 40x30 px
    t = centernet_targets(boxes, np.array([0, 0]), (32, 32), 1)
    size = torch.from_numpy(t.size)[None]  # (1, 2, 32, 32)
    off = torch.from_numpy(t.offset)[None]
    mask = torch.from_numpy(t.reg_mask)[None]
    assert float(masked_giou(size, off, size, off, mask)) == pytest.approx(0.0, abs=1e-5)
    # The same one-pixel (0.25 cell) slip costs the 6 px box far more than the 40 px one.
    only = [torch.zeros_like(mask), torch.zeros_like(mask)]
    only[0][0, 2, 2], only[1][0, 13, 15] = 1.0, 1.0  # centre cells of the two boxes
    slip = off + 0.25
    small, large = (float(masked_giou(size, slip, size, off, m)) for m in only)
    assert small > 2 * large > 0


def _dense_decode(heat, size, off, stride, m, centred):
    """The textbook map-wide CenterNet decode (max-pool peaks, top-k), as a reference."""
    import torch.nn.functional as F

    b, _, h, w = heat.shape
    prob = heat.sigmoid()
    keep = F.max_pool2d(prob, 3, 1, 1) == prob
    if centred:
        keep |= ((off >= 0) & (off < 1)).all(1, keepdim=True)
    scores, idx = (prob * keep).reshape(b, -1).topk(m, dim=1)  # (B, M)
    cell = idx % (h * w)
    ys, xs = (cell // w).float(), (cell % w).float()
    pick = cell[:, None].expand(-1, 2, -1)
    o = off.reshape(b, 2, -1).gather(2, pick)
    wh = size.clamp(-6, 6).exp().reshape(b, 2, -1).gather(2, pick)
    cx, cy = xs + o[:, 0], ys + o[:, 1]
    boxes = torch.stack(
        [cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], 2
    )
    return boxes * stride, scores, idx // (h * w)


@pytest.mark.parametrize("channels_last", [False, True])
def test_sparse_decode_matches_the_dense_reference_above_min_score(channels_last: bool) -> None:
    """decode works only at cells above min_score; what it returns there is what the map-wide
    decode returns: the same boxes, scores and labels, in score order, on any layout, at the
    map's borders, with and without centred cells, truncated to max_per_image."""
    from pdn_perception.core.models.detector import decode_per_image

    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        b, c, h, w = 3, 1 + trial % 3, 5 + trial % 23, 4 + trial % 31
        heat = torch.randn(b, c, h, w, generator=g) * 3 - 2
        size = torch.randn(b, 2, h, w, generator=g)
        off = torch.rand(b, 2, h, w, generator=g) * 1.6 - 0.3  # some in [0, 1)², most not
        if channels_last:
            heat, size, off = (
                t.contiguous(memory_format=torch.channels_last) for t in (heat, size, off)
            )
        m, min_score, centred = 3 + trial % 40, (0.05, 0.4, 0.9)[trial % 3], trial % 4 != 0
        want = _dense_decode(heat, size, off, 4, min(m, c * h * w), centred)
        got = decode(heat, size, off, 4, m, centred_cells=centred, min_score=min_score)
        for i in range(b):
            n = int((want[1][i] >= min_score).sum())
            assert int((got[1][i] > 0).sum()) == n  # nothing below min_score, nothing missing
            torch.testing.assert_close(got[1][i][:n], want[1][i][:n], rtol=0, atol=1e-6)
            torch.testing.assert_close(got[0][i][:n], want[0][i][:n], rtol=0, atol=1e-4)
            assert torch.equal(got[2][i][:n], want[2][i][:n])
            assert not got[0][i][n:].any() and not got[2][i][n:].any()  # empty slots are zero
        if centred:  # what the pipeline takes: each image's filled slots, as numpy
            for i, (bx, sc, lb) in enumerate(
                decode_per_image(heat, size, off, 4, m, 0.0, min_score)
            ):
                keep = got[1][i] > 0
                assert np.array_equal(sc, got[1][i][keep].numpy())
                assert np.array_equal(bx, got[0][i][keep].numpy())
                assert np.array_equal(lb, got[2][i][keep].numpy())


def test_decode_device_path_finds_and_gathers_what_the_host_path_does() -> None:
    """On GPUs the scan and the gathers run in torch on the device; on CPU numpy does them.
    Both paths, run here on CPU tensors, give the same cells in the same order and values."""
    from pdn_perception.core.models.detector import _cells_at_least, _take

    g = torch.Generator().manual_seed(1)
    heat = torch.randn(3, 2, 9, 13, generator=g)
    for x in (heat, heat.contiguous(memory_format=torch.channels_last), heat[:, :, 1:, ::2]):
        host, dev = _cells_at_least(x, 0.5, host=True), _cells_at_least(x, 0.5, host=False)
        assert len(host) > 10 and np.array_equal(host, dev)
        bi, yi, xi = host[:, :1], host[:, 2:3], host[:, 3:4] + np.array([0, 0])  # (N, 2) cols
        for index in ((bi, host[:, 1:2], yi, xi), (bi, slice(None), yi, xi)):
            np.testing.assert_array_equal(_take(x, index, host=True), _take(x, index, host=False))


def test_decode_keeps_both_of_two_objects_in_adjacent_cells() -> None:
    """Cars parked side by side: centres one stride-4 cell apart. The 3x3 peak search keeps only
    the stronger; the centred-cell rule keeps the other too, from its own offset and size."""
    boxes = np.array([[39, 40, 44, 50], [44.5, 40, 49.5, 50]], np.float32)  # cells 10 and 11
    t = centernet_targets(boxes, np.array([0, 0]), (32, 32), 1)
    heat = torch.from_numpy(t.heat)[None].clamp(1e-4, 1 - 1e-4).logit()  # (1, 1, 32, 32)
    heat[0, 0, 11, 10] += 0.5  # the left car's peak is the stronger one
    size, off = torch.from_numpy(t.size)[None], torch.from_numpy(t.offset)[None]
    for centred, found in ((False, 1), (True, 2)):
        b, s, _ = decode(heat, size, off, 4, 10, centred_cells=centred)
        kept = b[0][s[0] > 0.5].numpy()
        assert len(kept) == found
        np.testing.assert_allclose(kept, boxes[:found], atol=1e-4)


def test_box_vote_averages_agreeing_neighbours_and_ignores_a_parked_neighbour() -> None:
    """Every cell near a centre regresses that object's box. A slip of the peak cell's own size
    estimate is averaged out by its neighbours; the car next to it (IoU < vote_iou) is not
    mixed in, and neither is a neighbour of another class."""
    boxes = np.array([[39, 40, 44, 50], [44.5, 40, 49.5, 50]], np.float32)  # adjacent cars
    t = centernet_targets(boxes, np.array([0, 0]), (32, 32), 2, reg_radius=1)
    heat = torch.from_numpy(t.heat)[None].clamp(1e-4, 1 - 1e-4).logit()  # (1, 2, 32, 32)
    heat[0, 1] = heat[0, 0]  # class 1 fires at the same place, with its own boxes
    size, off = torch.from_numpy(t.size)[None].clone(), torch.from_numpy(t.offset)[None]
    size[0, :, 11, 10] += 0.25  # the left car's centre cell says a 1.3x too large box
    plain, s, _ = decode(heat[:, :1], size, off, 4, 10)
    voted, s2, _ = decode(heat[:, :1], size, off, 4, 10, vote_iou=0.5)
    assert torch.equal(s, s2)
    keep = s[0] > 0.5
    gt = torch.from_numpy(boxes)

    def err(found: torch.Tensor) -> torch.Tensor:  # (2,) worst coordinate error per car
        assert len(found) == 2
        return (found[:, None] - gt[None]).abs().max(dim=2).values.min(dim=0).values

    err_plain, err_voted = err(plain[0][keep]), err(voted[0][keep])
    assert err_plain[0] > 1.0 and err_voted[0] < 0.75 * err_plain[0]  # the slip, averaged
    assert err_voted[1] < 1e-3  # the right car, next to it, keeps its exact box
    both, s3, lab3 = decode(heat, size, off, 4, 20, vote_iou=0.5)
    one = both[0][(s3[0] > 0.5) & (lab3[0] == 0)]
    assert torch.allclose(one, voted[0][keep], atol=1e-4)  # class 1 does not vote for class 0


def test_joint_stage_keeps_batchnorm_statistics(bank: SceneBank) -> None:
    """The joint batch is one frame's crops; its statistics must not replace the running ones
    (they drift towards the last domain seen). The weights themselves still learn."""
    cfg = TrainConfig(
        saliency=StageBudget(steps=0),
        detector=StageBudget(steps=0),
        joint=StageBudget(steps=3),
        crop_size=64,
        saliency_input_size=128,
        top_k=2,
        progress=False,
    )
    tr = Trainer(cfg, bank, model_config=TINY)
    bn = [m for m in tr.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bn]
    weights = [p.detach().clone() for p in tr.model.parameters()]
    tr.train_joint()
    for m, (mean, var) in zip(bn, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert any(not torch.equal(p, w) for p, w in zip(tr.model.parameters(), weights))


TINY_FIELDS = {
    "saliency_width": 4,
    "saliency_head_width": 8,
    "detector_widths": [8, 8, 16, 16],
    "detector_depths": [2, 1, 1],
    "detector_neck_width": 8,
}


def test_pdn_train_cli_trains_the_requested_architecture(tmp_path) -> None:
    """The whole CLI on 3 tiny scenes, 2 steps a stage: the saved model has the asked-for
    architecture and its record says how it was made (so a probe is one reproducible command)."""
    from pdn_perception.cli.train import main
    from pdn_perception.core.models.io import model_extra

    out = tmp_path / "m.safetensors"
    spec = json.dumps(TINY_FIELDS)
    argv = ["--scenes", "3", "--scene-size", "256", "256", "--steps", "2", "--det-crop", "64"]
    argv += ["--sal-batch", "2", "--det-batch", "2", "--eval-frames", "0", "--workers", "1"]
    argv += ["--work-dir", str(tmp_path / "work"), "--out", str(out), "--no-progress"]
    assert main([*argv, "--model-config", spec, "--ema-decay", "0.5"]) == 0
    assert model_extra(out)["train_config"]["ema_decay"] == 0.5
    model = load_model(out)
    assert model.config.detector_depths == (2, 1, 1)
    assert model.config.detector_widths == (8, 8, 16, 16)
    assert model.config.classes == ("boat", "vehicle", "nucleus")
    assert "--model-config" in model_extra(out)["command"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet", "must be 'default', 'light', 'large' or a JSON object"),
        ("[1, 2]", "must be an object of ModelConfig fields"),
        ('{"classes": ["a"]}', "cannot set classes"),
        ('{"detector_depths": [0, 1, 1]}', "integers >= 1"),
        ('{"detector_kind": "vit"}', "not one of light, resnet18"),
        ('{"depth": 3}', "unknown ModelConfig key"),
    ],
)
def test_pdn_train_rejects_a_bad_model_config_before_any_work(
    spec: str, message: str, tmp_path, capsys
) -> None:
    from pdn_perception.cli.train import main

    argv = ["--model-config", spec, "--work-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # failed before rendering scenes or writing anything


def test_model_config_presets_name_the_shipped_architectures() -> None:
    from pdn_perception.cli.train import model_config_from_arg

    classes = ("a", "b")
    light = model_config_from_arg("light", classes)
    assert light == ModelConfig.light(classes=classes) and light.classes == classes
    assert light.detector_widths == (24, 24, 48, 96) and light.detector_depths == (1, 1, 1)
    assert model_config_from_arg("default", classes) == ModelConfig(classes=classes)
    assert model_config_from_arg("large", classes).detector_kind == "resnet18"
    # `--model-config light` reproduces the shipped light file's architecture, and the default
    # file is ModelConfig() itself: the card's training commands rebuild what is shipped.
    shipped = load_model(light_model_path()).config
    assert shipped == ModelConfig.light(classes=shipped.classes)
    default = load_model().config
    assert default == ModelConfig(classes=default.classes)
    light_params = sum(p.numel() for p in PatchDriveModel(light).detector.parameters())
    default_params = sum(p.numel() for p in PatchDriveModel(ModelConfig()).detector.parameters())
    assert light_params < 0.1 * default_params


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to refuse")
def test_pdn_train_refuses_cuda_where_there_is_none(tmp_path, capsys) -> None:
    from pdn_perception.cli.train import main

    assert main(["--device", "cuda", "--work-dir", str(tmp_path), "--no-progress"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_resolve_device_names() -> None:
    from pdn_perception.train.trainer import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu", "mps"):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


def _two_domain_bank() -> SceneBank:
    """Toy scenes of a bright domain "a" and a dark domain "b" (first-layer statistics differ)."""
    scenes = []
    for i in range(6):
        sc = toy_scene(i)
        if i % 2:
            sc.image = sc.image // 3
        sc.domain = "b" if i % 2 else "a"
        scenes.append(sc)
    return SceneBank(scenes, 128, mask_fn=_oracle_mask)


def test_domain_weights_set_each_domains_share_of_detector_crops() -> None:
    bank = _two_domain_bank()
    assert bank.item_weights({}) is None
    p = bank.item_weights({"a": 3.0})  # "b" keeps weight 1
    doms = np.array([it.domain for it in bank.items])
    assert p.sum() == pytest.approx(1.0)
    assert p[doms == "a"].sum() == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    b = sample_detector_batch(bank, rng, 64, 32, 2, item_p=bank.item_weights({"b": 0.0}))
    assert float(b.images.mean()) > 90  # every crop from the bright domain
    with pytest.raises(ValueError, match="domain weights must be >= 0"):
        bank.item_weights({"a": -1.0})


def test_weighted_detector_stage_re_estimates_batchnorm_on_the_uniform_mix() -> None:
    """Trained on domain "a" only, the detector's first BatchNorm would keep "a"'s statistics;
    the stage re-estimates them on uniformly drawn crops, as inference sees every domain."""
    bank = _two_domain_bank()
    cfg = TrainConfig(
        detector=StageBudget(steps=4),
        det_batch=4,
        det_crop=64,
        det_domain_weights=(("b", 0.0),),
        det_bn_batches=30,
        saliency_input_size=128,
        progress=False,
    )
    tr = Trainer(cfg, bank, model_config=TINY)
    tr.train_detector()
    det = tr.model.detector
    conv, bn = det.stem[0][0], det.stem[0][1]

    def channel_mean(item_p) -> torch.Tensor:
        b = sample_detector_batch(bank, np.random.default_rng(1), 96, 64, 2, item_p=item_p)
        with torch.no_grad():
            return conv(det.norm(b.images)).mean(dim=(0, 2, 3))

    only_a = channel_mean(bank.item_weights({"b": 0.0}))
    uniform = channel_mean(None)
    err_uniform = (bn.running_mean - uniform).abs().mean()
    err_a = (bn.running_mean - only_a).abs().mean()
    assert err_uniform < 0.5 * err_a, (err_uniform, err_a)


def test_train_config_checks_the_joint_controller_and_round_trips_domain_weights() -> None:
    with pytest.raises(ValueError, match="joint_crop_selection must be one of peak, coverage"):
        TrainConfig(joint_crop_selection="best")
    with pytest.raises(ValueError, match="det_scale_range must be 0 < lo <= hi"):
        TrainConfig(det_scale_range=(1.25, 0.8))
    cfg = TrainConfig(det_domain_weights=(("aerial", 2.0),), joint_crop_selection="coverage")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_pdn_train_parses_and_rejects_domain_weights(tmp_path, capsys) -> None:
    from pdn_perception.cli.train import domain_weights_from_args, main

    assert domain_weights_from_args(["aerial=2", "maritime=1.5"]) == (
        ("aerial", 2.0),
        ("maritime", 1.5),
    )
    for bad in ("aerial", "aerial=x", "forest=1", "aerial=-1"):
        assert main(["--det-domain-weights", bad, "--work-dir", str(tmp_path)]) == 2
        assert "--det-domain-weights takes DOMAIN=W" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("cin", [8, 12, 24])
def test_strided_pointwise_conv_trains_like_the_stock_one(cin: int) -> None:
    """The projection shortcut's grad-mode path (subsample, then 1x1) gives the stock strided
    convolution's outputs and gradients, on the channels_last shapes (6-15 input channels) whose
    stock backward corrupts the heap on AVX-512 CPUs; under no_grad it is the stock kernel."""
    from pdn_perception.core.models.blocks import StridedPointwiseConv

    torch.manual_seed(0)
    ours = StridedPointwiseConv(cin, 16, 1, 2, bias=False).to(memory_format=torch.channels_last)
    stock = torch.nn.Conv2d(cin, 16, 1, 2, bias=False)
    stock.weight.data.copy_(ours.weight.data)
    x = torch.rand(2, cin, 65, 64)  # odd height: the last row is kept, as the stride-2 conv does
    xa = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    xb = x.clone().requires_grad_()
    ya, yb = ours(xa), stock(xb)
    assert ya.shape == yb.shape == (2, 16, 33, 32)
    torch.testing.assert_close(ya, yb)
    (ya * torch.arange(ya.numel()).reshape(ya.shape)).sum().backward()
    (yb * torch.arange(yb.numel()).reshape(yb.shape)).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-2)  # float32 sums up to 1e5
    torch.testing.assert_close(ours.weight.grad, stock.weight.grad, rtol=1e-4, atol=1e-2)
    with torch.no_grad():
        torch.testing.assert_close(ours(xa), stock(xb))


def test_prefetcher_hands_out_the_sequential_batches_and_rewinds_the_rng() -> None:
    from pdn_perception.train.prefetch import Prefetcher

    def make(rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 1 << 30, 3)

    seq = np.random.default_rng(5)
    expected, states = [], []
    for _ in range(4):
        expected.append(make(seq))
        states.append(seq.bit_generator.state)
    rng = np.random.default_rng(5)
    interval = sys.getswitchinterval()
    with Prefetcher(make, rng, depth=2) as feed:
        assert sys.getswitchinterval() < interval  # the trainer's op launches wait less
        for want, state in zip(expected[:3], states[:3], strict=True):
            assert np.array_equal(next(feed), want)
            assert feed.rng_state == state  # what a checkpoint after this batch must store
    assert sys.getswitchinterval() == interval
    # The thread had made batches ahead; closing rewinds, so the 4th draw is the 4th batch.
    assert np.array_equal(make(rng), expected[3])


def test_prefetcher_raises_the_makers_own_error_in_order() -> None:
    from pdn_perception.train.prefetch import Prefetcher

    calls = []

    def make(rng: np.random.Generator) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("scene 7 has no pixels")
        return len(calls)

    with Prefetcher(make, np.random.default_rng(0)) as feed:
        assert [next(feed), next(feed)] == [1, 2]
        with pytest.raises(ValueError, match="scene 7"):
            next(feed)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(make, np.random.default_rng(0), depth=0)


def _two_stage_config(small_train_config, **overrides):
    return small_train_config(
        seed=3,
        saliency=StageBudget(steps=6),
        detector=StageBudget(steps=8),
        joint=StageBudget(steps=2),
        det_peaks=4,
        **overrides,
    )


def test_prefetch_runs_only_where_a_core_is_free_for_it() -> None:
    from pdn_perception.train.trainer import uses_prefetch

    assert uses_prefetch(True, "cpu", torch_threads=1, cores=2)
    assert not uses_prefetch(True, "cpu", torch_threads=2, cores=2)  # the default on 2 cores
    assert uses_prefetch(True, "cuda", torch_threads=16, cores=16)
    assert not uses_prefetch(False, "cuda", torch_threads=1, cores=16)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no core is free to prefetch")
def test_prefetching_trains_bit_identical_weights(bank: SceneBank, small_train_config) -> None:
    runs = []
    for prefetch in (True, False):
        cfg = _two_stage_config(small_train_config, prefetch=prefetch)  # threads=1
        trainer = Trainer(cfg, bank, model_config=TINY)
        assert trainer.prefetch is prefetch
        trainer.run()
        runs.append(trainer.model.state_dict())
    for k, v in runs[0].items():
        assert torch.equal(v, runs[1][k]), k


def test_a_run_killed_mid_detector_stage_resumes_to_the_same_weights(
    bank: SceneBank, tmp_path, small_train_config, monkeypatch
) -> None:
    """The checkpoint after step k stores the RNG as it was after batch k, not after the
    batches the thread had already made ahead, so the resumed run sees the same batches."""
    import pdn_perception.train.trainer as trainer_mod

    cfg = _two_stage_config(small_train_config, checkpoint_every_s=0.0)
    whole = Trainer(cfg, bank, model_config=TINY)
    whole.run()

    real = trainer_mod.detector_loss
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # step 4: steps 0-3 are checkpointed, batches 5-6 made ahead
            raise _Killed
        return real(*args, **kwargs)

    ckpt = tmp_path / "ckpt.safetensors"
    monkeypatch.setattr(trainer_mod, "detector_loss", dying)
    with pytest.raises(_Killed):
        Trainer(cfg, bank, model_config=TINY, checkpoint_path=ckpt).run()
    monkeypatch.setattr(trainer_mod, "detector_loss", real)
    resumed = Trainer(cfg, bank, model_config=TINY, checkpoint_path=ckpt)
    resumed.resume_from(ckpt)
    assert (resumed.state.stage, resumed.state.step) == ("detector", 4)
    resumed.run()
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

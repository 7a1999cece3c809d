"""The whole pipeline on a tiny random-weight model: a well-formed Result in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdn_perception.core.backends as backends
from pdn_perception.core import FrameError, Pipeline, PipelineConfig, Result
from pdn_perception.core.backends import BackendUnavailable, cxx_compiler, resolve
from pdn_perception.core.models import ModelLoadError, load_model, save_model
from pdn_perception.core.models.patchdrive import ModelConfig, PatchDriveModel


def _check_result(r: Result, frame_hw: tuple[int, int], n_crops: int | None) -> None:
    n = len(r.boxes)
    assert r.boxes.shape == (n, 4) and r.boxes.dtype == np.float32
    assert r.scores.shape == (n,) and r.labels.shape == (n,)
    if n:
        assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] <= frame_hw[1]).all()
        assert (r.boxes[:, 1] >= 0).all() and (r.boxes[:, 3] <= frame_hw[0]).all()
        assert (np.diff(r.scores) <= 1e-6).all(), "sorted by score"
        assert r.labels.max() < len(r.class_names)
    if n_crops is not None:
        assert r.crop_boxes.shape == (n_crops, 4)
    stages = {"preprocess", "select", "detect", "merge", "total"}
    if r.mode == "topk":  # the baselines run no saliency net by default
        assert r.saliency.ndim == 2 and r.saliency.min() >= 0.0 and r.saliency.max() <= 1.0
        stages.add("saliency")
    else:
        assert r.saliency is None and r.saliency_scale is None
    assert set(r.timings_ms) == stages
    assert r.frame_hw == frame_hw
    assert r.backend == "cpu"


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (2048, 2048, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("mode", "extra", "n_crops"),
    [
        ("topk", {"top_k": 4}, 4),
        ("topk", {"top_k": 1}, 1),
        ("tiles", {}, 16),
        ("tiles", {"tile_overlap": 0.2}, 25),
        ("global", {}, 0),
    ],
)
def test_every_mode_returns_well_formed_result(
    tiny_model: PatchDriveModel, frame: np.ndarray, mode: str, extra: dict, n_crops: int
) -> None:
    cfg = PipelineConfig(mode=mode, score_threshold=0.05, backend="cpu", **extra)
    r = Pipeline(cfg, model=tiny_model)(frame)
    _check_result(r, (2048, 2048), n_crops)
    assert r.mode == mode
    if mode != "global":
        assert sum(r.batch_sizes) == n_crops, "every crop went through the detector"


@pytest.mark.parametrize("mode", ["tiles", "global"])
def test_saliency_all_modes_gives_the_baselines_the_topk_saliency_map(
    tiny_model: PatchDriveModel, frame: np.ndarray, mode: str
) -> None:
    topk = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    r = topk.reconfigure(topk.config.replace(mode=mode, saliency_all_modes=True))(frame)
    want = topk(frame)
    np.testing.assert_array_equal(r.saliency, want.saliency)
    assert r.saliency_scale == want.saliency_scale == (16.0, 16.0)
    assert "saliency" in r.timings_ms


@pytest.mark.parametrize("mode", ["topk", "tiles", "global"])
def test_a_stride_2_detector_gives_frame_boxes_in_every_mode(frame: np.ndarray, mode: str) -> None:
    torch.manual_seed(0)
    model = PatchDriveModel(ModelConfig(detector_stride=2, detector_fine_width=8)).eval()
    cfg = PipelineConfig(mode=mode, score_threshold=0.0, backend="cpu")
    r = Pipeline(cfg, model=model)(frame)
    _check_result(r, (2048, 2048), {"topk": 4, "tiles": 16, "global": 0}[mode])
    assert len(r.boxes) > 0  # every peak is kept at threshold 0


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (480, 640, 3), (480, 640), (300, 200, 1)])
def test_non_square_small_and_mono_frames(tiny_model: PatchDriveModel, shape: tuple) -> None:
    f = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    r = Pipeline(PipelineConfig(score_threshold=0.05, backend="cpu"), model=tiny_model)(f)
    _check_result(r, shape[:2], None)
    assert 1 <= len(r.crop_boxes) <= 4


@pytest.mark.parametrize("shape", [(300, 700, 3), (300, 200)])
def test_crops_of_a_small_frame_hold_its_pixels_and_zeros_around_them(
    tiny_model: PatchDriveModel, shape: tuple
) -> None:
    """Crops smaller than crop_size are zero-padded (the buffer is left unfilled only where
    every crop fills it); mono is repeated to three channels."""
    f = np.random.default_rng(4).integers(1, 255, shape, dtype=np.uint8)
    p = Pipeline(PipelineConfig(mode="tiles", backend="cpu"), model=tiny_model)
    boxes = p(f).crop_boxes
    crops = p._extract(p._to_device(f), boxes).float()  # (K, 3, S, S)
    rgb = f if f.ndim == 3 else np.repeat(f[:, :, None], 3, axis=2)
    for crop, (x1, y1, x2, y2) in zip(crops, boxes.tolist(), strict=True):
        h, w = y2 - y1, x2 - x1
        want = torch.from_numpy(rgb[y1:y2, x1:x2]).permute(2, 0, 1).float()
        assert torch.equal(crop[:, :h, :w], want)
        assert crop[:, h:, :].abs().sum() == 0 and crop[:, :, w:].abs().sum() == 0


def test_k_changes_between_calls_without_rebuild(tiny_model: PatchDriveModel, frame) -> None:
    p = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    p8 = p.reconfigure(p.config.replace(top_k=8))
    assert p8.runtime is p.runtime, "per-frame settings reuse the built runtime"
    assert len(p(frame).crop_boxes) == 4 and len(p8(frame).crop_boxes) == 8


def test_small_batches_still_process_every_crop(tiny_model: PatchDriveModel, frame) -> None:
    cfg = PipelineConfig(backend="cpu", top_k=5, max_batch_size=2)
    r = Pipeline(cfg, model=tiny_model)(frame)
    assert r.batch_sizes == (2, 2, 1)
    cfg = PipelineConfig(backend="cpu", top_k=3, memory_budget_mb=16)  # budget < one crop
    assert Pipeline(cfg, model=tiny_model)(frame).batch_sizes == (1, 1, 1)


def test_bad_frames_raise_frame_error(tiny_model: PatchDriveModel) -> None:
    p = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    with pytest.raises(FrameError, match="uint8"):
        p(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(FrameError, match="shape"):
        p(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(FrameError, match="too small"):
        p(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FrameError, match="numpy"):
        p([[1, 2]])  # type: ignore[arg-type]


def test_json_schema(tiny_model: PatchDriveModel, frame) -> None:
    r = Pipeline(PipelineConfig(backend="cpu", score_threshold=0.0), model=tiny_model)(frame)
    j = r.to_json()
    assert set(j) == {"width", "height", "mode", "detections", "crops", "timing_ms"}
    assert len(j["crops"]) == 4 and "total" in j["timing_ms"]
    det = j["detections"][0]
    assert len(det["box"]) == 4 and det["label"] in r.class_names


def test_backend_registry_resolves_and_explains() -> None:
    backend, why = resolve("auto")
    assert backend.name == "cpu" and "auto chose 'cpu'" in why
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        resolve("opencl")


def test_gpu_backends_skip_cleanly_without_cuda(tiny_model: PatchDriveModel) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by test_gpu.py")
    for name in ("cuda", "tensorrt"):
        with pytest.raises(BackendUnavailable, match="unavailable"):
            Pipeline(PipelineConfig(backend=name), model=tiny_model)


def test_compile_backend_on_cpu_matches_eager(
    tiny_model: PatchDriveModel, frame, monkeypatch
) -> None:
    """The opt-in inductor path (weights frozen into the graph) gives eager's answers, in fp32
    and with the bf16 weights both use on CPUs with bf16 units (emulated elsewhere)."""
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the compile backend runs on the GPU (test_gpu.py)")
    if cxx_compiler() is None:
        pytest.skip("no C++ compiler: inductor cannot build CPU kernels here")
    monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: False)
    eager = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    compiled = Pipeline(PipelineConfig(backend="compile"), model=tiny_model)
    assert compiled.backend == "compile" and compiled.runtime.dtype == torch.uint8
    crops = torch.randint(0, 256, (2, 512, 512, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    for a, b in zip(compiled.runtime.detector(crops), eager.runtime.detector(crops)):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    r_c, r_e = compiled(frame), eager(frame)
    assert r_c.crop_boxes.tolist() == r_e.crop_boxes.tolist()
    np.testing.assert_allclose(r_c.saliency, r_e.saliency, atol=1e-4)
    # Where the CPU has bf16 units both run a bf16 copy of the weights: still the same answers.
    monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: True)
    eager16 = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    compiled16 = Pipeline(PipelineConfig(backend="compile"), model=tiny_model)
    assert compiled16.runtime.dtype == eager16.runtime.dtype == torch.bfloat16
    crops16 = crops.to(torch.bfloat16)
    for a, b in zip(compiled16.runtime.detector(crops16), eager16.runtime.detector(crops16)):
        torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)


def test_model_files_round_trip_and_fail_clearly(tiny_model: PatchDriveModel, tmp_path) -> None:
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    x = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        for a, b in zip(tiny_model.detector(x), loaded.detector(x)):
            torch.testing.assert_close(a, b)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError):
        load_model(corrupt)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ModelLoadError, match="not a pdn_perception model"):
        load_model(other)


def test_cpu_bf16_weights_compute_what_autocast_computes(
    tiny_model: PatchDriveModel, monkeypatch
) -> None:
    """On CPUs with bf16 units the CPU backend runs a bf16 copy of the weights on bf16 pixels
    (exact for 0..255) instead of autocast over fp32 weights: the same arithmetic, so the same
    outputs, without re-casting the weights every call. (bf16 is emulated elsewhere: the
    comparison holds on any CPU.)"""

    monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: True)
    pipe = Pipeline(PipelineConfig(backend="cpu"), model=tiny_model)
    assert pipe.runtime.dtype == torch.bfloat16 and "bf16" in pipe.runtime.reason
    ref = backends._eval_copy(tiny_model, torch.device("cpu"), torch.float32)
    crops = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    cl = crops.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        want = [o.float() for o in ref.detector(cl)]
        want_sal = ref.saliency(cl[:1]).float()
    got = pipe.runtime.detector(crops.to(torch.bfloat16))
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(
        pipe.runtime.saliency(crops[:1].to(torch.bfloat16)), want_sal, atol=2e-2, rtol=2e-2
    )
    result = pipe(np.random.default_rng(2).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert result.saliency.dtype == np.float32 and np.isfinite(result.saliency).all()

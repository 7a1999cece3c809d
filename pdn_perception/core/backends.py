"""Inference backends behind one small registry: cpu, cuda, compile, tensorrt; ``auto`` picks.

A backend turns a PatchDriveModel into a ``Runtime``: two callables (saliency, detector) plus
the device and input dtype they expect. The pipeline never cares which backend it got.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from .. import OPENMP_POLICY_TOO_LATE
from .config import PipelineConfig
from .fusion import conv_act_fusion_available, fuse_conv_act, fuse_conv_bn, prepack_convs
from .models.blocks import first_conv
from .models.patchdrive import PatchDriveModel

log = logging.getLogger(__name__)

SPINNING_OPENMP = (
    "OpenMP threads spin: torch was imported before pdn_perception, so its OMP_WAIT_POLICY=PASSIVE"
    " came too late (import pdn_perception first, or set OMP_WAIT_POLICY yourself); every frame"
    " slows down while another process wants these cores, and timings are not representative"
)

Tensor = torch.Tensor
DetectorOut = tuple[Tensor, Tensor, Tensor]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


@dataclass(frozen=True)
class Runtime:
    """A model made ready to run: what the pipeline calls each frame."""

    name: str
    device: torch.device
    # dtype of the (B, 3, H, W) images fed to both callables: uint8 on CPU in fp32 (the model's
    # first op normalises them, so the float copy of the crops is written once), bf16 on CPUs
    # with bf16 units (the weights are bf16 too), fp16 on GPUs
    dtype: torch.dtype
    saliency: Callable[[Tensor], Tensor]  # (1, 3, H, W) -> (1, 1, H/4, W/4) logits
    detector: Callable[[Tensor], DetectorOut]  # (B, 3, S, S) -> heat, size, offset
    reason: str  # why this backend (for logs and diagnostics)
    # threads_for(n): a context that runs torch with the intra-op threads worth that much work
    # (n: input pixels of a network call, or elements of the maps an elementwise step reads)
    threads_for: Callable[[int], contextlib.AbstractContextManager] = lambda pixels: (
        contextlib.nullcontext()
    )


class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]: ...

    def build(self, model: PatchDriveModel, config: PipelineConfig) -> Runtime: ...


REGISTRY: dict[str, Backend] = {}
# On a GPU: TensorRT, else eager CUDA; on a CPU eager. ``compile`` is opt-in on CPU: it needs a
# C++ compiler and 5-10 s of compiling per batch size, which every short-lived tool and test
# would pay; for a long-running node on CPU it is the better choice (README, "Speed").
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


def register(backend: Backend) -> Backend:
    REGISTRY[backend.name] = backend
    return backend


def cpu_threads() -> int:
    """Intra-op threads for CPU inference: $OMP_NUM_THREADS when set (cores pinned for the node
    on a vehicle computer), else every core."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        n = 0
    return n if n > 0 else max(1, os.cpu_count() or 1)


def cpu_supports_bf16() -> bool:
    """bf16 autocast only pays off with native bf16 units (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: bf16 calls of fewer input pixels than this may run on one thread. On 2 cores a parallel
#: region costs a wake-up of the other thread (passive OpenMP waiting, see ``pdn_perception``),
#: which can outweigh the split for small work: on the 2-core AMX Xeon (2026-12-02, idle) the
#: saliency net on one 512² frame took 3.5 ms on one thread and 5.1 ms on two, one crop 4.7 vs
#: 6.1 ms, two crops 7.5-8.2 vs 7.6 ms, four 16 vs 11 ms; decoding the heat maps (3 x 128² a
#: crop) of four crops 2.4 vs 3.4 ms, of eight 5.1 vs 4.9 ms. On a slower AMX Xeon (model 167,
#: 2026-12-03) it was the other way round: the saliency net 9.9 ms on one thread, 4.4 on two,
#: and the whole K=4 frame 12 % faster with every call on two threads (three interleaved A/B
#: runs). So whether small calls stay on one thread is measured when the runtime is built
#: (``small_calls_parallel``), not assumed.
#: fp32 does ~2-3x more work per op and keeps every thread: on the same Xeon with bf16 off,
#: two threads won even there (saliency 7.8-8.4 vs 9.2-9.6 ms, one crop 9.6-10.1 vs 12.1-12.9).
PARALLEL_MIN_PIXELS = 2 * 512 * 512
#: Small calls stay on one thread only if that is clearly faster (time <= this x all threads'),
#: as on the idle Xeon (0.69); a near tie runs them like every other call, on all threads.
SERIAL_MIN_GAIN = 0.9


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore (a cheap switch)."""
    prev = torch.get_num_threads()
    if n == prev:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def cpu_thread_policy(
    threads: int, bf16: bool, min_pixels: int = PARALLEL_MIN_PIXELS
) -> Callable[[int], contextlib.AbstractContextManager]:
    """``Runtime.threads_for`` on CPU: all ``threads`` for work of at least ``min_pixels``
    (always in fp32), else one."""

    def threads_for(pixels: int) -> contextlib.AbstractContextManager:
        parallel = not bf16 or pixels >= min_pixels
        return intra_op_threads(threads if parallel else 1)

    return threads_for


def small_calls_parallel(
    net: nn.Module, threads: int, dtype: torch.dtype, size: int = 512, reps: int = 5, warm: int = 2
) -> tuple[bool, float, float]:
    """Time ``net`` on one (1, 3, size, size) input on one thread and on ``threads``, alternating
    (median of ``reps`` each, after ``warm`` rounds: the first calls at a thread count are
    slower); returns (small calls should run on all threads, ms on one, ms on all). The
    answer differs between CPUs of one family (``PARALLEL_MIN_PIXELS``), so the CPU runtime
    asks this once, ~0.15 s, instead of assuming it."""
    x = torch.zeros((1, 3, size, size), dtype=dtype).contiguous(memory_format=torch.channels_last)
    times: dict[int, list[float]] = {1: [], threads: []}
    with torch.inference_mode():
        for i in range(warm + reps):
            for n in times:
                with intra_op_threads(n):
                    t0 = time.perf_counter()
                    net(x)
                    if i >= warm:
                        times[n].append((time.perf_counter() - t0) * 1000.0)
    one, par = (sorted(times[n])[reps // 2] for n in (1, threads))
    return not one <= SERIAL_MIN_GAIN * par, one, par


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep large activation buffers mapped between frames (glibc mallopt); 1.5x on torch CPU.

    Skipped when jemalloc is preloaded (it already behaves this way). Process-wide, idempotent.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return _ALLOCATOR_TUNED
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
        _ALLOCATOR_TUNED = bool(ok)
    except OSError:
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


def _eval_copy(model: PatchDriveModel, device: torch.device, dtype: torch.dtype) -> PatchDriveModel:
    import copy

    m = copy.deepcopy(model).eval()
    fuse_conv_bn(m)
    for net, stem in (
        (m.detector, m.detector.stem),
        (m.saliency.backbone, m.saliency.backbone.stem),
    ):
        net.norm.fold_scale_into(first_conv(stem))
    return m.to(device=device, dtype=dtype, memory_format=torch.channels_last)


def _as_float(out: Tensor | DetectorOut) -> Tensor | DetectorOut:
    """fp32 outputs whatever the network computed in (bf16 autocast)."""
    return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def _cpu_runtime(
    name: str,
    model: PatchDriveModel,
    wrap: Callable[[nn.Module], Callable],
    reason: str,
    config: PipelineConfig,
    fuse_act: bool = False,
) -> Runtime:
    """What every CPU backend shares: allocator, threads, and the folded copy: bf16 weights
    fed bf16 pixels (exact for 0..255) where the CPU has bf16 units, else fp32 weights fed
    uint8 pixels; ``fuse_act`` also fuses ReLUs and skip adds into the convolutions and
    prepacks both nets' weights (eager only: inductor does its own fusion and packing);
    ``wrap`` turns each network into the callable."""
    tune_cpu_allocator()
    threads = cpu_threads()
    torch.set_num_threads(threads)
    dev = torch.device("cpu")
    bf16 = cpu_supports_bf16()
    m = _eval_copy(model, dev, torch.bfloat16 if bf16 else torch.float32)
    notes = ["bf16 weights" if bf16 else "fp32 (no native bf16 on this CPU)"]
    if OPENMP_POLICY_TOO_LATE:
        notes.append("OpenMP threads spin (torch was imported before pdn_perception)")
        warnings.warn(SPINNING_OPENMP, RuntimeWarning, stacklevel=2)  # shown once per backend
    if fuse_act:
        ok, why = conv_act_fusion_available()
        packed = 0
        if ok:
            fuse_conv_act(m)
            pixel = torch.bfloat16 if bf16 else torch.uint8
            for net, side in (
                (m.saliency, config.saliency_input_size),
                (m.detector, config.crop_size),
            ):
                example = torch.zeros((1, 3, side, side), dtype=pixel)
                packed += prepack_convs(net, example.contiguous(memory_format=torch.channels_last))
        notes.append(
            ("ReLU and skip adds fused into the convolutions" if ok else f"unfused: {why}")
            + (", both nets' weights prepacked" if packed else "")
        )
    min_pixels = PARALLEL_MIN_PIXELS
    if bf16 and threads > 1:
        parallel, one, par = small_calls_parallel(m.saliency, threads, torch.bfloat16)
        measured = f"saliency {one:.1f} ms on 1 thread, {par:.1f} on {threads}"
        if parallel:
            min_pixels = 0
            notes.append(f"every call on {threads} threads ({measured})")
        else:
            notes.append(f"one thread for calls under {PARALLEL_MIN_PIXELS} pixels ({measured})")
    dtype = torch.bfloat16 if bf16 else torch.uint8
    return Runtime(
        name,
        dev,
        dtype,
        wrap(m.saliency),
        wrap(m.detector),
        ", ".join([reason, *notes]),
        cpu_thread_policy(threads, bf16, min_pixels),
    )


class CpuBackend:
    """Eager PyTorch on CPU: BN folded, channels_last, bf16 where the CPU has bf16 units.

    bf16 runs as a bf16 copy of the weights fed bf16 pixels, not as autocast over fp32 weights:
    the same arithmetic (identical outputs, measured), without re-casting every weight on every
    call, which cost ~2 ms a call at one crop and ~8 ms at four (2 AMD EPYC cores, 2026-12-02).
    """

    name = "cpu"

    def available(self) -> tuple[bool, str]:
        return True, "always available"

    def build(self, model: PatchDriveModel, config: PipelineConfig) -> Runtime:
        def wrap(net: nn.Module) -> Callable:
            def run(x: Tensor):
                with torch.inference_mode():
                    return _as_float(net(x.contiguous(memory_format=torch.channels_last)))

            return run

        return _cpu_runtime(self.name, model, wrap, "CPU eager", config, fuse_act=True)


class CudaBackend:
    """Eager fp16 on CUDA with channels_last."""

    name = "cuda"

    def available(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "torch.cuda.is_available() is False (no GPU or CPU-only torch)"
        return True, f"CUDA device {torch.cuda.get_device_name(0)}"

    def build(self, model: PatchDriveModel, config: PipelineConfig) -> Runtime:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend 'cuda' unavailable: {why}")
        dev = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        m = _eval_copy(model, dev, torch.float16)

        def wrap(net: nn.Module) -> Callable:
            @torch.inference_mode()
            def run(x: Tensor):
                return net(x.contiguous(memory_format=torch.channels_last))

            return run

        return Runtime(self.name, dev, torch.float16, wrap(m.saliency), wrap(m.detector), why)


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU ($CXX, else c++/g++/clang++ on PATH)."""
    import shutil

    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


class CompileBackend:
    """torch.compile (inductor). On CPU: weights frozen into the graph, so convolutions run as
    oneDNN kernels with bias, ReLU and residual adds fused in, and the input normalisation is one
    fused pass. On the 2-core development CPU it is 0-10 % faster than eager for the pipeline
    alone and gains more in the node, where the cores are shared with frame reception (fewer
    passes over memory, fewer thread barriers; measured figures: README, "Speed"). On CUDA:
    CUDA graphs (reduce-overhead).

    Shapes are static (``dynamic=False``): each new batch size (a new ``top_k``) or frame aspect
    ratio compiles once, a few seconds, then stays cached for the process (and on disk in
    inductor's cache). Dynamic shapes were measured 1.5x slower per frame on CPU.
    """

    name = "compile"

    def available(self) -> tuple[bool, str]:
        if torch.cuda.is_available():
            return True, "torch.compile on CUDA (cold compile takes seconds per batch size)"
        cxx = cxx_compiler()
        if cxx is None:
            return False, "no C++ compiler ($CXX, c++, g++, clang++) for inductor on CPU"
        return True, f"torch.compile on CPU with {cxx} (cold compile ~5-10 s per batch size)"

    def build(self, model: PatchDriveModel, config: PipelineConfig) -> Runtime:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend 'compile' unavailable: {why}")
        if torch.cuda.is_available():
            base = CudaBackend().build(model, config)
            sal = torch.compile(base.saliency, mode="reduce-overhead", dynamic=False)
            det = torch.compile(base.detector, mode="reduce-overhead", dynamic=False)
            return Runtime(self.name, base.device, base.dtype, sal, det, "torch.compile over cuda")

        def wrap(net: nn.Module) -> Callable:
            compiled = torch.compile(net, dynamic=False, options={"freezing": True})

            def run(x: Tensor):
                with torch.inference_mode():  # freezing needs it; outside the compiled graph
                    return _as_float(compiled(x.contiguous(memory_format=torch.channels_last)))

            return run

        return _cpu_runtime(self.name, model, wrap, "inductor, frozen", config)


def engine_cache_key(model: nn.Module, shapes: tuple, precision: str) -> str:
    """Hash of weights + GPU + TensorRT/torch-tensorrt versions + shapes + precision."""
    import tensorrt
    import torch_tensorrt

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(torch.cuda.get_device_name(0).encode())
    h.update(str(torch.cuda.get_device_capability(0)).encode())
    h.update(torch_tensorrt.__version__.encode())
    h.update(getattr(tensorrt, "__version__", "?").encode())
    h.update(repr((shapes, precision)).encode())
    return h.hexdigest()[:20]


def default_engine_cache_dir(config: PipelineConfig) -> Path:
    if config.engine_cache_dir:
        return Path(config.engine_cache_dir)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdn_perception"


class TensorRTBackend:
    """torch_tensorrt (dynamo IR) fp16 engine for the crop detector, cached on disk.

    The engine has a dynamic batch profile: min 1, opt top_k, max the batch cap, at crop_size.
    The saliency net (one small call per frame) stays eager fp16. Built engines are saved with
    ``torch_tensorrt.save`` and reloaded with ``torch.export.load`` keyed by ``engine_cache_key``.
    """

    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        ok, why = CudaBackend().available()
        if not ok:
            return False, why
        if importlib.util.find_spec("torch_tensorrt") is None:
            return (
                False,
                "torch_tensorrt is not installed (pip install '.[tensorrt]' on a GPU host)",
            )
        return True, f"torch_tensorrt on {why}"

    def engine_path(self, model: PatchDriveModel, config: PipelineConfig) -> Path:
        max_b = config.max_batch_size or 16
        shapes = ((1, config.top_k, max_b), config.crop_size)
        key = engine_cache_key(model.detector, shapes, "fp16")
        return default_engine_cache_dir(config) / f"detector-{key}.ep"

    def build(self, model: PatchDriveModel, config: PipelineConfig) -> Runtime:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"backend 'tensorrt' unavailable: {why}")
        import torch_tensorrt

        base = CudaBackend().build(model, config)
        det_module = _eval_copy(model, base.device, torch.float16).detector
        s = config.crop_size
        max_b = config.max_batch_size or 16
        opt_b = min(config.top_k, max_b)
        path = self.engine_path(model, config)
        if path.is_file():
            trt_module = torch.export.load(str(path)).module()
            note = f"engine loaded from cache {path}"
        else:
            log.warning("building TensorRT engine (may take minutes): %s", path)
            inputs = [
                torch_tensorrt.Input(
                    min_shape=(1, 3, s, s),
                    opt_shape=(opt_b, 3, s, s),
                    max_shape=(max_b, 3, s, s),
                    dtype=torch.half,
                )
            ]
            trt_module = torch_tensorrt.compile(
                det_module, ir="dynamo", inputs=inputs, enabled_precisions={torch.half}
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            example = torch.zeros(opt_b, 3, s, s, device=base.device, dtype=torch.half)
            torch_tensorrt.save(trt_module, str(path), inputs=[example])
            note = f"engine built and cached at {path}"

        def detector(x: Tensor) -> DetectorOut:
            with torch.inference_mode():
                return tuple(trt_module(x.contiguous()))  # type: ignore[return-value]

        return Runtime(self.name, base.device, torch.float16, base.saliency, detector, note)


for _b in (CpuBackend(), CudaBackend(), CompileBackend(), TensorRTBackend()):
    register(_b)


def resolve(name: str) -> tuple[Backend, str]:
    """The backend to use for ``name`` and why. ``auto`` walks AUTO_ORDER to the first available."""
    if name == "auto":
        skipped = []
        for cand in AUTO_ORDER:
            ok, why = REGISTRY[cand].available()
            if ok:
                note = f"auto chose '{cand}': {why}"
                if skipped:
                    note += f" (skipped {'; '.join(skipped)})"
                return REGISTRY[cand], note
            skipped.append(f"{cand}: {why}")
        raise BackendUnavailable("no backend available")  # pragma: no cover - cpu always is
    if name not in REGISTRY:
        raise BackendUnavailable(f"unknown backend {name!r}; known: auto, {', '.join(REGISTRY)}")
    ok, why = REGISTRY[name].available()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} unavailable: {why}")
    return REGISTRY[name], f"'{name}' requested: {why}"


def build_runtime(model: PatchDriveModel, config: PipelineConfig) -> Runtime:
    """Resolve ``config.backend`` and build it; the Runtime's reason says what runs and why."""
    backend, why = resolve(config.backend)
    rt = backend.build(model, config)
    reason = f"{why}; {rt.reason}"
    log.info("backend %s: %s", rt.name, reason)
    return dataclasses.replace(rt, reason=reason)

"""pdn-build-engine: build (or verify) the cached TensorRT engine ahead of time.

An engine build can take minutes; doing it here keeps the node's configure step short and the
vehicle's first frame fast. Without a GPU or torch_tensorrt it says why and exits 3.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..core.backends import REGISTRY, BackendUnavailable
from ..core.config import ConfigError, load_pipeline_config
from ..core.models.io import ModelLoadError, load_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pdn-build-engine", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="pipeline YAML (crop_size, top_k, ...)")
    p.add_argument("--model", default=None, help="model .safetensors (default: shipped model)")
    p.add_argument("--top-k", type=int, default=None, help="optimisation batch size (default K)")
    p.add_argument("--max-batch-size", type=int, default=None, help="engine max batch (16)")
    p.add_argument("--cache-dir", default=None, help="engine cache dir")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = p.parse_args(argv)
    try:
        cfg = load_pipeline_config(
            args.config,
            backend="tensorrt",
            model_path=args.model,
            top_k=args.top_k,
            max_batch_size=args.max_batch_size,
            engine_cache_dir=args.cache_dir,
        )
        backend = REGISTRY["tensorrt"]
        ok, why = backend.available()
        if not ok:
            raise BackendUnavailable(why)
        model = load_model(cfg.model_path or None)
        path = backend.engine_path(model, cfg)
        if args.force and path.exists():
            path.unlink()
        t0 = time.perf_counter()
        rt = backend.build(model, cfg)
    except BackendUnavailable as exc:
        print(f"pdn-build-engine: TensorRT unavailable here: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, ModelLoadError) as exc:
        print(f"pdn-build-engine: {exc}", file=sys.stderr)
        return 2
    print(f"{rt.reason} ({time.perf_counter() - t0:.1f} s)")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

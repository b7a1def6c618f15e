"""pi0.5 chunk latency (p50/p99) per dtype and camera count: full size on a GPU, miniature on a CPU.

What is measured
----------------
LeRobot 0.6.1's real `PI05Policy`, randomly initialised (weights do not change the arithmetic):

- on a CUDA device: the full-size architecture (PaliGemma gemma_2b + gemma_300m action expert +
  SigLIP So400m at 224x224; 4.14B parameters as built, 3.35B without the two unused LM heads),
  built directly on the GPU, in bfloat16 and float32,
  with 1, 2 and 3 cameras. One sample = one `predict_action_chunk` call (SigLIP on every image,
  the 200-token prompt prefix, then 10 flow-matching steps of the expert over a 50-step chunk),
  timed with CUDA synchronisation, from a batch already on the device. The prompt is random
  token ids at LeRobot's padded length (200): the PaliGemma tokenizer is gated and not needed for
  timing; tokenising and normalising cost well under a millisecond on the CPU. GPU memory per
  configuration is reported too: the weights, the peak while building and the peak within a call.
  `--compile MODE` turns on LeRobot's `compile_model` (torch.compile of the sampler) in that mode;
  the first call, which pays the compilation, is timed on its own (`first_call_s`);
- without a GPU: the *miniature* pi0.5 the tests use (coirl_ros/policies/pi05_miniature.py, ~41M
  parameters, toy widths, 32x32 images), the same code at toy size, saved as a checkpoint and
  loaded through the product's loader. Two paths: "model" (`predict_action_chunk` on a
  preprocessed batch) and "product" (`Pi05BasePolicy.predict_chunk` from a raw observation dict:
  tensors, LeRobot's normaliser, prompt tokenisation, model, unnormaliser), timed in turns. These numbers say
  nothing about a real pi0.5's speed; the script says so in its output.

Warm-up calls are excluded. Prints a table and writes a CSV (default bench/results/pi05_latency.csv).

How to run
----------
    .venv/bin/python bench/pi05_latency.py                 # GPU if present, else the miniature on CPU
    .venv/bin/python bench/pi05_latency.py --iters 50 --cameras 1 3 --dtypes bfloat16
    .venv/bin/python bench/pi05_latency.py --miniature     # the miniature even on a GPU
    python bench/pi05_latency.py --cameras 1 --dtypes bfloat16 --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_common import device_sync, machine_info, write_csv  # noqa: E402

from coirl_ros.configs import RobotConfig, load_config  # noqa: E402
from coirl_ros.constants import ACTION, OBS_STATE, image_key  # noqa: E402

CAMERAS = ("front", "wrist", "side")
STATE_DIM, ACTION_DIM = 8, 7


def full_size_model(cameras: int, dtype: str, device: str, compile_mode: str | None = None) -> Any:
    """The real pi0.5 architecture, random weights, built on `device`; `compile_mode` turns on
    LeRobot's own `compile_model` (torch.compile of the sampling loop) in that mode."""
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    inputs = {OBS_STATE: PolicyFeature(FeatureType.STATE, (STATE_DIM,))}
    inputs |= {image_key(c): PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in CAMERAS[:cameras]}
    config = PI05Config(
        dtype=dtype,
        device=device,
        input_features=inputs,
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
        compile_model=compile_mode is not None,
        compile_mode=compile_mode or PI05Config.compile_mode,
    )
    with torch.device(device):  # allocate on the GPU directly: 3B parameters on the CPU take minutes
        return PI05Policy(config).eval()


def model_batch(policy: Any, device: str, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A preprocessed batch: images in [0, 1] at the model's resolution, random prompt tokens."""
    from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    config = policy.config
    length, (h, w) = config.tokenizer_max_length, config.image_resolution
    batch = {
        OBS_LANGUAGE_TOKENS: torch.as_tensor(rng.integers(0, 1000, (1, length)), device=device),
        OBS_LANGUAGE_ATTENTION_MASK: torch.ones(1, length, dtype=torch.bool, device=device),
        OBS_STATE: torch.zeros(1, STATE_DIM, device=device),
    }
    for key in config.image_features:
        batch[key] = torch.as_tensor(rng.random((1, 3, h, w), dtype=np.float32), device=device)
    return batch


def time_calls(fns: dict[str, Any], iters: int, warmup: int, device: str) -> dict[str, np.ndarray]:
    """Seconds per call of each function, after `warmup` untimed rounds. The functions take turns
    within each round, so load from other processes hits them alike (CUDA work is finished before
    each clock read)."""
    sync = device_sync(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            out[name].append(time.perf_counter() - start)
    return {name: np.array(v) for name, v in out.items()}


def row(arch: str, path: str, dtype: str, cameras: int, device: str, secs: np.ndarray, **extra: Any) -> dict:
    p50, p99 = np.quantile(secs, [0.5, 0.99]) * 1e3
    out = {"arch": arch, "path": path, "dtype": dtype, "cameras": cameras, "device": device}
    out |= {"iters": len(secs), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
    out |= {"mean_ms": round(secs.mean() * 1e3, 2), "max_ms": round(secs.max() * 1e3, 2)}
    return out | extra


def bench_full_size(args: argparse.Namespace, rng: np.random.Generator) -> list[dict]:
    rows = []
    gib = 2**30
    for dtype in args.dtypes:
        for cams in args.cameras:
            gc.collect()  # the previous configuration's model must be gone before this one's memory is read
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            policy = full_size_model(cams, dtype, "cuda", args.compile)
            params = sum(p.numel() for p in policy.parameters())
            torch.cuda.synchronize()
            weights, build_peak = torch.cuda.memory_allocated() / gib, torch.cuda.max_memory_allocated() / gib
            batch = model_batch(policy, "cuda", rng)
            call = {"model": lambda p=policy, b=batch: p.predict_action_chunk(b)}
            # The first call pays torch.compile's tracing and autotuning when --compile is on.
            start = time.perf_counter()
            call["model"]()
            torch.cuda.synchronize()
            first_s = time.perf_counter() - start
            torch.cuda.reset_peak_memory_stats()
            secs = time_calls(call, args.iters, args.warmup, "cuda")["model"]
            peak = torch.cuda.max_memory_allocated() / gib  # weights + what one chunk call adds
            rows.append(
                row(
                    "full",
                    "model",
                    dtype,
                    cams,
                    "cuda",
                    secs,
                    params_m=round(params / 1e6),
                    compile=args.compile or "off",
                    first_call_s=round(first_s, 1),
                    weights_gib=round(weights, 2),
                    build_peak_gib=round(build_peak, 2),
                    peak_gib=round(peak, 2),
                )
            )
            print_row(rows[-1])
            del policy, batch, call
    return rows


def bench_miniature(args: argparse.Namespace, rng: np.random.Generator) -> list[dict]:
    from coirl_ros.policies.pi05_base import Pi05BasePolicy
    from coirl_ros.policies.pi05_miniature import build_miniature_pi05, save_miniature_checkpoint

    robot = load_config(ROOT / "config" / "robot.yaml", RobotConfig)
    instruction = "put the square nut onto the square peg"
    stats = {
        k: {"q01": -np.ones(d), "q99": np.ones(d)} for k, d in ((OBS_STATE, STATE_DIM), (ACTION, ACTION_DIM))
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes:
            for cams in args.cameras:
                names = CAMERAS[:cams]
                model = build_miniature_pi05(STATE_DIM, ACTION_DIM, names, chunk_size=50, dtype=dtype)
                params = sum(p.numel() for p in model.parameters())
                directory = save_miniature_checkpoint(
                    model, Path(tmp) / f"{dtype}_{cams}", [instruction], stats
                )
                cam_cfgs = [{"name": n, "source": "sim", "width": 64, "height": 48} for n in names]
                cam_robot = RobotConfig.model_validate(robot.model_dump() | {"cameras": cam_cfgs})
                base = Pi05BasePolicy.load(
                    directory,
                    robot=cam_robot,
                    instruction=instruction,
                    action_dim=ACTION_DIM,
                    chunk_size=50,
                    device="cpu",
                    dtype=dtype,
                )
                batch = model_batch(model, "cpu", rng)
                obs = {OBS_STATE: rng.uniform(-1, 1, STATE_DIM).astype(np.float32)}
                obs |= {image_key(n): rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for n in names}
                calls = {
                    "model": lambda m=model, b=batch: m.predict_action_chunk(b),
                    "product": lambda b=base, o=obs: b.predict_chunk(o),
                }
                for path, secs in time_calls(calls, args.iters, args.warmup, "cpu").items():
                    rows.append(
                        row("miniature", path, dtype, cams, "cpu", secs, params_m=round(params / 1e6))
                    )
                    print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    extra = ""
    if "peak_gib" in r:
        extra = (
            f"  weights {r['weights_gib']} GiB, peak in a call {r['peak_gib']} GiB (while building"
            f" {r['build_peak_gib']}), first call {r['first_call_s']} s, compile {r['compile']}"
        )
    print(
        f"  {r['arch']:<9} {r['path']:<7} {r['dtype']:<8} cams {r['cameras']}  p50 {r['p50_ms']:8.1f} ms"
        f"  p99 {r['p99_ms']:8.1f} ms  ({r['params_m']}M params, {r['iters']} calls){extra}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=20, help="timed chunk calls per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument(
        "--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"]
    )
    parser.add_argument(
        "--miniature", action="store_true", help="time the miniature even when a GPU is present"
    )
    parser.add_argument(
        "--compile",
        default=None,
        help="GPU only: LeRobot's compile_model in this torch.compile mode (default, reduce-overhead, ...)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "pi05_latency.csv")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available() and not args.miniature
    info = {"torch": torch.__version__, "torch threads": str(torch.get_num_threads())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for key, value in machine_info(info).items():
        print(f"{key}: {value}")
    rng = np.random.default_rng(0)
    if gpu:
        print("full-size pi0.5 (random weights) on the GPU:")
        rows = bench_full_size(args, rng)
    else:
        why = "--miniature given" if torch.cuda.is_available() else "no CUDA device"
        print(f"{why}: timing the MINIATURE pi0.5 on the CPU (toy widths; not a real pi0.5's latency):")
        rows = bench_miniature(args, rng)
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()

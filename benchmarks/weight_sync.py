"""Weight sync seconds: `WeightSync.push` (learner rank 0 -> 1 and 2 vLLM engines) vs a memcpy floor.

The floor is the model's bytes divided by the memcpy bandwidth measured here (a torch tensor
copy of the same number of bytes, one thread like the actors). A push has to at least flatten
the weights once on the sender and write them into every engine, so a small multiple of the
floor is the goal (target <= 3x). Run for the default tiny model and a larger one.

    python benchmarks/weight_sync.py [--models 128x2 512x8] [--pushes 3]
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from _common import load_average, median, table, write_section

if TYPE_CHECKING:
    from cdra.models.tiny import TinyModelConfig

TARGET = 3.0


def model_config(spec: str) -> TinyModelConfig:
    """'HIDDENxLAYERS' -> TinyModelConfig with head_dim 64 (what vLLM's CPU attention accepts)."""
    from cdra.models.tiny import TinyModelConfig

    hidden, layers = (int(x) for x in spec.lower().split("x"))
    return TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64, num_kv_heads=hidden // 64,
                           intermediate_size=4 * hidden)


def memcpy_seconds(nbytes: int, repeats: int = 5) -> float:
    """Median seconds of one torch copy of `nbytes` between two preallocated buffers, 1 thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in before timing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    torch.set_num_threads(threads)
    return median(times)


def reload_from_memory(worker_actor: Any, model_path: str, repeats: int = 3) -> float:
    """Body for `RolloutWorker.__ray_call__`: median seconds of the engine's in-place reload fed
    from tensors already in memory, i.e. a push without any transfer (the vLLM part of the cost)."""
    import glob

    from safetensors.torch import load_file

    state: dict = {}
    for file in glob.glob(f"{model_path}/*.safetensors"):
        state.update(load_file(file))

    def run(worker: Any) -> float:
        from cdra.runtime.weight_sync import _refresh_tied_lm_head

        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            worker.model_runner.reload_weights(weights_iterator=iter(list(state.items())))
            _refresh_tied_lm_head(worker.model_runner.get_model())
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    return worker_actor.llm.collective_rpc(run)[0]


def measure(spec: str, engine_counts: list[int], pushes: int, bucket_mb: int) -> dict[str, Any]:
    import ray
    from transformers import AutoTokenizer

    from cdra.models.tiny import build_tiny_model
    from cdra.runtime.groups import LearnerGroup, RolloutPool, WeightSync
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.rollout import EngineConfig

    config = model_config(spec)
    path = str(build_tiny_model(config))
    pad_id = AutoTokenizer.from_pretrained(path).pad_token_id
    learners = LearnerGroup(LearnerConfig(model_path=path, num_ranks=1, zero_stage=0, sync_bucket_mb=bucket_mb), pad_id)
    nbytes = sum(t.numel for b in ray.get(learners.workers[0].call.remote("weight_layout")) for t in b.tensors) * 4
    pool = RolloutPool(EngineConfig(model_path=path, max_model_len=512), max(engine_counts))
    rows = []
    version = 0
    for count in engine_counts:
        # WeightSync makes its own process group per instance; the first `count` engines join it
        sync = WeightSync(learners, pool.workers[:count])
        version += 1
        sync.push(version)  # warm-up: first-touch of the receive buffers, lazy init in vLLM
        times, floors, loads = [], [], [load_average()]
        for _ in range(pushes):
            version += 1
            times.append(sync.push(version))
            floors.append(memcpy_seconds(nbytes))
            loads.append(load_average())
        rows.append({"engines": count, "push_s": median(times), "floor_s": median(floors), "loads": loads})
    reload_s = ray.get(pool.workers[0].__ray_call__.remote(reload_from_memory, path))
    for actor in learners.workers + pool.workers:
        ray.kill(actor)
    return {"spec": spec, "config": config, "bytes": nbytes, "rows": rows, "reload_s": reload_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["128x2", "512x8"], help="HIDDENxLAYERS, head_dim 64")
    parser.add_argument("--engines", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pushes", type=int, default=3)
    parser.add_argument("--bucket-mb", type=int, default=16, help="LearnerConfig.sync_bucket_mb (default 16)")
    args = parser.parse_args()

    from cdra.runtime.cluster import init_ray

    init_ray()
    rows = []
    for spec in args.models:
        result = measure(spec, args.engines, args.pushes, args.bucket_mb)
        for r in result["rows"]:
            ratio = r["push_s"] / r["floor_s"]
            print(f"[bench] {spec} -> {r['engines']} engine(s): push {r['push_s'] * 1e3:.1f} ms, floor {r['floor_s'] * 1e3:.2f} ms, {ratio:.1f}x")
            c = result["config"]
            rows.append([f"{c.hidden_size}h x {c.num_layers}L", f"{result['bytes'] / 2**20:.1f}", r["engines"], r["push_s"] * 1e3,
                         r["floor_s"] * 1e3, result["bytes"] / r["floor_s"] / 2**30, ratio, result["reload_s"] * 1e3,
                         result["reload_s"] / r["floor_s"], " → ".join([r["loads"][0], r["loads"][-1]])])
    body = f"""
Learner: 1 rank, ZeRO-0, float32, sync_bucket_mb {args.bucket_mb}, gloo. Engines: RolloutPool workers (vLLM CPU, in-process).
Push = `WeightSync.push` wall time in the driver (Ray calls, bucket flatten, gloo broadcast, vLLM `reload_weights`,
ack); median of {args.pushes} after one warm-up push. Floor = model bytes / memcpy bandwidth (torch `copy_` of the same
bytes, 1 thread, in the driver, measured between pushes). "vLLM reload from memory" is engine 0's `reload_weights`
(+ tied LM-head refresh) fed from tensors already in its memory: what the engine alone costs, no transfer.

{table(["model", "MiB (fp32)", "engines", "push ms", "memcpy floor ms", "memcpy GiB/s", f"ratio (target <= {TARGET:g})",
        "vLLM reload from memory ms", "reload / floor", "load avg before → after"], rows)}
"""
    write_section("weight_sync", "Weight sync: WeightSync.push vs memcpy floor", body)
    print(body)


if __name__ == "__main__":
    main()

"""A Python DDP-ish worker that reports its progress through ddprun's metrics file.

torch.distributed over Gloo from torchrun's variables (RANK, WORLD_SIZE, MASTER_*), one
allreduce per step, and after every step the metrics file's contract (Note [Training
metrics] in runtime/metrics/training_metrics.h): one JSON object written to
$DDPRUN_METRICS_FILE atomically (a temporary beside it, then os.replace), so that ddprun's
/metrics shows the script's step and loss as it does ddptrain's.

    metrics_worker.py STEPS STEP_SECONDS
"""
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist


def write_metrics(path: str, state: dict) -> None:
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(state, f)
    os.replace(temporary, path)


def main():
    steps, step_seconds = int(sys.argv[1]), float(sys.argv[2])
    path = os.environ.get("DDPRUN_METRICS_FILE", "")
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    total = torch.ones(1)
    for step in range(1, steps + 1):
        dist.all_reduce(total)
        time.sleep(step_seconds)
        if path:
            write_metrics(path, {"step": step, "total_steps": steps, "loss": 2.3 * math.exp(-step / steps),
                                 "last_step_unix": time.time()})
    dist.barrier()
    print(f"[rank{rank}]: done world_size={dist.get_world_size()} metrics_file={bool(path)}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""A DDP-ish worker with a tqdm-like progress bar, for ddprun's live-output tests.

torch.distributed over Gloo from torchrun's variables (RANK, WORLD_SIZE, MASTER_*), one
allreduce per step, and rank 0 drawing "\\r step I/N t=<unix time>" with print(end="") and
no flush, as tqdm does: only PYTHONUNBUFFERED (which ddprun sets) makes it leave the process
before the worker exits. The time stamp lets a test measure how late each state arrives.

    progress_bar_worker.py STEPS STEP_SECONDS LINGER_SECONDS stdout|stderr
"""
import sys
import time

import torch
import torch.distributed as dist


def main():
    steps, step_seconds, linger = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    bar = sys.stdout if sys.argv[4] == "stdout" else sys.stderr
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    total = torch.ones(1)
    for step in range(1, steps + 1):
        dist.all_reduce(total)
        if rank == 0:
            print(f"\r step {step}/{steps} t={time.time():.3f}", end="", file=bar)
        time.sleep(step_seconds)
    if rank == 0:
        print(file=bar)
    dist.barrier()  # the bar is finished before any rank's next line
    # A line that names its rank already, as torch's own excepthook writes them.
    print(f"[rank{rank}]: done world_size={dist.get_world_size()} sum={total.item():.0f}")
    dist.destroy_process_group()
    time.sleep(linger)  # the bar must have arrived long before this exit


if __name__ == "__main__":
    main()

"""PyTorch's own DDP on the same problem as `ddp_worker mlp pyref`: a 64-128-128-10 MLP
with formula weights, formula data, SGD(lr=0.05, momentum=0.9), 6 steps, 8 samples per
rank. Rank 0 writes the final parameters (float32, in parameter order) to argv[1].
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

STEPS, BATCH_PER_RANK = 6, 8


def formula(shape, a, b, scale):
    n = 1
    for s in shape:
        n *= s
    return (torch.arange(n, dtype=torch.float64) * a + b).sin().mul(scale).float().view(shape)


def main() -> int:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://")
    rank, n = dist.get_rank(), dist.get_world_size()
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    with torch.no_grad():
        for j, p in enumerate(model.parameters()):
            p.copy_(formula(list(p.shape), 0.37, 1.3 * j, 0.1))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = BATCH_PER_RANK * n
    for step in range(STEPS):
        x = formula([g, 64], 0.11, step, 1.0)
        y = (torch.arange(g, dtype=torch.int64) * 7 + step) % 10
        lo, hi = rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK
        opt.zero_grad()
        F.cross_entropy(ddp(x[lo:hi]), y[lo:hi]).backward()
        opt.step()
    if rank == 0:
        with open(sys.argv[1], "wb") as f:
            for p in model.parameters():
                f.write(p.detach().contiguous().numpy().tobytes())
    # Leave together, and without PyTorch's Gloo teardown: destroy_process_group() and the
    # interpreter's exit abort now and then (SIGABRT, "terminate called without an active
    # exception"; the CI saw it once), after the result is already written. os._exit skips
    # the destructors that abort.
    dist.barrier()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

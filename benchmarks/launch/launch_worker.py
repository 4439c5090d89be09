"""One worker of the launch benchmark, the Python twin of launch_worker.cpp (run under
torchrun): init_process_group("gloo", init_method="env://") -> the zoo's mlp
(784-256-128-10) -> PyTorch's DistributedDataParallel -> K SGD steps on one in-memory
random batch (32 samples) -> barrier -> exit. Each rank prints the same line as the C++
worker, with CLOCK_REALTIME timestamps in ns since the epoch:
  LAUNCH_BENCH impl=torch rank=R world_size=N start_ns=.. torch_ns=.. init_ns=..
               ddp_ns=.. first_step_ns=.. end_ns=..
start = first line of this script (the interpreter is up), torch = `import torch` done.
"""
import time

START_NS = time.time_ns()

import argparse  # noqa: E402  (after the start stamp on purpose)
import os  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

TORCH_NS = time.time_ns()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.steps < 1:
        raise SystemExit(f"launch_worker.py: --steps must be >= 1, got {args.steps}")
    torch.manual_seed(0)
    dist.init_process_group("gloo", init_method="env://")
    init_ns = time.time_ns()

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                          nn.ReLU(), nn.Linear(128, 10))  # models/model_zoo.cpp "mlp"
    net = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 784), torch.randint(10, (32,))
    ddp_ns = time.time_ns()

    first_step_ns = 0
    for step in range(args.steps):
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()  # buckets are allreduced while backward runs
        optimizer.step()
        if step == 0:
            first_step_ns = time.time_ns()
    # Rank 0 hosts the store: nobody leaves before everybody is done with it.
    dist.barrier()
    end_ns = time.time_ns()
    # One write(2) per line (print() may split it), so the ranks' lines stay whole on the
    # launcher's shared pipe.
    os.write(1, (f"LAUNCH_BENCH impl=torch rank={dist.get_rank()} world_size={dist.get_world_size()} "
                 f"start_ns={START_NS} torch_ns={TORCH_NS} init_ns={init_ns} ddp_ns={ddp_ns} "
                 f"first_step_ns={first_step_ns} end_ns={end_ns}\n").encode())
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

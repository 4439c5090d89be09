"""The Python side of the DDP benchmark: the same models, batches and thread count as
ddp_bench.cpp, trained with PyTorch's DistributedDataParallel (Gloo) under torchrun.
Modes: ddp | compute (no communication) | allreduce (one allreduce of all gradients).
--backend nccl and --device cuda (scripts/device_check.sh) as ddp_bench's: under Gloo the
ranks share the visible GPUs (local rank modulo their count). Rank 0 prints one JSON line.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


def workload(name):
    if name == "mlp_small":
        return (nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                              nn.Linear(128, 10)), torch.randn(32, 64), torch.randint(10, (32,)))
    if name == "lenet":  # models/model_zoo.cpp "cnn"
        return (nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                              nn.Linear(128, 10)),
                torch.randn(64, 1, 28, 28), torch.randint(10, (64,)))
    if name == "big":
        return (nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                              nn.Linear(4096, 1024), nn.ReLU(), nn.Linear(1024, 10)),
                torch.randn(8, 1024), torch.randint(10, (8,)))
    raise SystemExit(f"unknown --model {name}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--mode", required=True, choices=["ddp", "compute", "allreduce"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device("cpu")
    if args.device == "cuda" or (args.device == "auto" and args.backend == "nccl"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device} with --backend {args.backend}: no CUDA device "
                             "is visible (torch.cuda.is_available() is false); use --device cpu")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        index = local_rank if args.backend == "nccl" else local_rank % torch.cuda.device_count()
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend)
    model, x, y = workload(args.model)
    model, x, y = model.to(device), x.to(device), y.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    ddp_args = {"device_ids": [device.index]} if device.type == "cuda" else {}
    net = DistributedDataParallel(model, **ddp_args) if args.mode == "ddp" else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    flat = torch.randn(n_params).to(device)

    def sync():  # kernels run asynchronously: the clock is read once the device is done
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step():
        if args.mode == "allreduce":
            dist.all_reduce(flat)
            return
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    sync()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64).to(device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    seconds = elapsed.item()
    if dist.get_rank() == 0:
        print(json.dumps({"impl": "torch", "model": args.model, "mode": args.mode,
                          "params": n_params, "batch_per_rank": x.shape[0],
                          "world_size": dist.get_world_size(), "steps": args.steps,
                          "backend": args.backend, "device": device.type,
                          "step_ms": 1000 * seconds / args.steps,
                          "samples_per_s": x.shape[0] * dist.get_world_size() * args.steps / seconds}),
              flush=True)
    # Rank 0 hosts the store: nobody leaves before everybody is done with it.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

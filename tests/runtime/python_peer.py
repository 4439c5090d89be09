"""One rank of a mixed group: PyTorch's own torch.distributed (Gloo) joining ddprun ranks.

Runs the same collectives, in the same order, with the same checks as
distributed_worker.cpp; rendezvous through env:// (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), i.e. PyTorch's TCPStore and init_process_group key layout.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist


def main() -> int:
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
    rank, n = dist.get_rank(), dist.get_world_size()
    failures = []

    def expect(what, got, want):
        if not torch.equal(got, want):
            failures.append(f"{what}: got {got} want {want}")

    t = torch.full((1000,), float(rank + 1))
    dist.all_reduce(t)
    expect("allreduce sum float32", t, torch.full((1000,), float(n * (n + 1) // 2)))
    t = torch.arange(64, dtype=torch.int64) * (rank + 1)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    expect("allreduce max int64", t, torch.arange(64, dtype=torch.int64) * n)
    root = n - 1
    t = torch.arange(100, dtype=torch.float64) * (rank + 1)
    dist.broadcast(t, src=root)
    expect(f"broadcast from {root}", t, torch.arange(100, dtype=torch.float64) * (root + 1))
    out = [torch.empty(3, dtype=torch.int32) for _ in range(n)]
    dist.all_gather(out, torch.tensor([rank, 10 * rank, 100 * rank], dtype=torch.int32))
    for r in range(n):
        expect(f"allgather slot {r}", out[r], torch.tensor([r, 10 * r, 100 * r], dtype=torch.int32))
    # No destroy_process_group(): PyTorch's Gloo teardown aborts now and then (see
    # tests/runtime/ddp/python_ddp_reference.py); __main__ leaves with os._exit.
    dist.barrier()
    for f in failures:
        print(f"python rank {rank}: MISMATCH {f}", file=sys.stderr)
    if failures:
        return 1
    print(f"python rank {rank}/{n}: all collectives verified", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

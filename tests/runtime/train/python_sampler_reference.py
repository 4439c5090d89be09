"""PyTorch's torch.utils.data.DistributedSampler, the reference for
distributed_sampler_test.cpp. Each argument is one case,
"size,num_replicas,seed,epoch,shuffle,drop_last" (shuffle, drop_last: 0 or 1); for every
case and every rank it prints one line:
    case <i> rank <r>: <index> <index> ...
"""
import sys

from torch.utils.data import DistributedSampler


class FakeDataset:
    """Only the length matters to the sampler."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def main() -> int:
    for i, case in enumerate(sys.argv[1:]):
        size, replicas, seed, epoch, shuffle, drop_last = (int(v) for v in case.split(","))
        for rank in range(replicas):
            sampler = DistributedSampler(FakeDataset(size), num_replicas=replicas, rank=rank,
                                         shuffle=bool(shuffle), seed=seed,
                                         drop_last=bool(drop_last))
            sampler.set_epoch(epoch)
            print(f"case {i} rank {rank}: " + " ".join(str(j) for j in sampler), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

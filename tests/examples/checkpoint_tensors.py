"""Prints one line per model tensor of a ddprun checkpoint, as Python's torch.load (with
its default weights_only=True) reads it: `<name> <dtype> <shape> <crc32 of the raw bytes>`.
The test compares these lines with what the C++ side reads from the same file.
"""
import sys
import zlib

import torch


def main() -> int:
    checkpoint = torch.load(sys.argv[1])
    for key in ("format", "model", "optimizer", "step", "epoch", "sampler", "rng", "config"):
        if key not in checkpoint:
            print(f"missing key {key}", file=sys.stderr)
            return 1
    for name, tensor in checkpoint["model"].items():
        data = tensor.detach().contiguous().numpy().tobytes()
        shape = "x".join(str(s) for s in tensor.shape)
        print(f"{name} {str(tensor.dtype).replace('torch.', '')} {shape} {zlib.crc32(data):08x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

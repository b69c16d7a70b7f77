"""Sample from a trained Glow.

    python sample.py ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt task=sample temperature=0.7
"""

from __future__ import annotations

import sys

from glow import sampling

if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    if "ckpt_path" not in args:
        sys.exit("usage: python sample.py ckpt_path=<checkpoint> [temperature=0.7] [n=16]")
    model = sampling.load(args["ckpt_path"])
    grid = sampling.temperature_grid(model, [float(args.get("temperature", 0.7))], int(args.get("n", 16)))
    print(sampling.save_grid(grid, args.get("out", "samples.png"), n_bits=model.n_bits))

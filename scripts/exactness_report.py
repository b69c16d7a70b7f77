"""Worst round-trip and log-determinant errors over every flow layer and every coupling x permutation
Glow, each moved away from its identity initialisation (the figures quoted in the closing notes).

    python scripts/exactness_report.py
"""

from __future__ import annotations

import torch

from glow.exactness import layer_factories, layer_logdet_error, layer_round_trip, model_errors, model_variants


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = layer_factories()
    f64 = max(layer_round_trip(make, torch.float64) for make in layers.values())
    f32 = max(layer_round_trip(make, torch.float32) for make in layers.values())
    logdet = max(layer_logdet_error(make) for make in layers.values())
    print(f"{len(layers)} layers: round trip float64 {f64:.1e}, float32 {f32:.1e}; logdet vs autograd {logdet:.1e}")

    variants = model_variants()
    errors = [model_errors(coupling, permutation) for coupling, permutation in variants]
    print(f"Glow ({len(variants)} coupling x permutation variants): round trip float64 "
          f"{max(e[0] for e in errors):.1e}, float32 {max(e[1] for e in errors):.1e}; "
          f"logdet vs autograd {max(e[2] for e in errors):.1e}")


if __name__ == "__main__":
    main()

"""Run by tests/test_ddp.py: 2-process CPU DDP training; each rank saves its ActNorm parameters.

Lightning's DDP launcher re-executes this script for rank 1, so it must be a plain script.
    python tests/ddp_worker.py <out dir> <image folder>
"""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from glow.flows.actnorm import ActNorm  # noqa: E402
from tests.conftest import compose_train  # noqa: E402


class SaveActNorm(L.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_start(self, trainer, module):  # right after the data-dependent init
        state = {name: torch.cat([m.loc.flatten(), m.log_scale.flatten()]).detach().clone()
                 for name, m in module.model.named_modules() if isinstance(m, ActNorm)}
        torch.save(state, self.out / f"actnorm_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    out, folder = Path(sys.argv[1]), sys.argv[2]
    cfg = compose_train(out, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                              "trainer.precision=32-true", "data=imagefolder", f"data.path={folder}",
                              "data.image_size=16", "data.batch_size=8", "data.val_fraction=0.1",
                              "module.init_batch_size=16", "trainer.max_steps=3",
                              "data.limit_test=15"])  # odd: 8 + 7 over two ranks
    datamodule, module, trainer = train.build(cfg)
    trainer.callbacks.append(SaveActNorm(out))
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        torch.save({"test_images": metrics[0]["test/images"], "test_bpd": metrics[0]["test/bpd"]},
                   out / "test_metrics.pt")

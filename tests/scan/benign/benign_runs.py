"""Whole training output folders, written by a real Trainer run for one step on CPU.

A Hugging Face Trainer folder holds `training_args.bin` (`torch.save(TrainingArguments)`, whose
str-Enum fields are pickled by REDUCE), and each `checkpoint-*/` adds `optimizer.pt`,
`scheduler.pt`, `rng_state.pth` and `trainer_state.json`. A Lightning checkpoint holds the loops'
and callbacks' state and the hyper-parameters. Every file in those folders must pass.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path


def transformers_trainer_folder(folder: Path) -> Path:
    """Train a tiny BERT for one step with the real Trainer, saving a checkpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("WANDB_DISABLED", "true")
    import torch  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    data = [{"input_ids": torch.tensor([1, 2, 3, 4]), "attention_mask": torch.ones(4, dtype=torch.long),
             "labels": torch.tensor(i % 2)} for i in range(4)]
    out = folder / "hf-trainer"
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        save_strategy="steps",
        save_steps=1,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        disable_tqdm=True,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(model=model, args=args, train_dataset=data)
        trainer.train()
        trainer.save_model(str(out))
        trainer.save_state()
    # `save_model` writes training_args.bin at the top too; make sure it is there as the Trainer writes it.
    assert (out / "training_args.bin").is_file()
    assert any(out.glob("checkpoint-*/optimizer.pt"))
    return out


def lightning_checkpoint_folder(folder: Path) -> Path:
    """Fit a tiny LightningModule for one step on CPU with ModelCheckpoint."""
    import pytorch_lightning as pl  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint  # noqa: PLC0415
    from torch.utils.data import DataLoader, TensorDataset  # noqa: PLC0415

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.1, hidden: int = 4, name: str = "tiny") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(3, hidden)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x).sum(1), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> object:
            opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
            return {"optimizer": opt, "lr_scheduler": sched}

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.manual_seed(0)
    out = folder / "lightning"
    data = DataLoader(TensorDataset(torch.randn(4, 3), torch.randn(4)), batch_size=2, num_workers=0)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
        callbacks=[ModelCheckpoint(dirpath=str(out), save_last=True, monitor="train_loss"),
                   EarlyStopping(monitor="train_loss", patience=3)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Tiny(), data)
        trainer.save_checkpoint(str(out / "manual.ckpt"))
    assert any(out.glob("*.ckpt"))
    return out


def accelerate_state_folder(folder: Path) -> Path:
    """`Accelerator.save_state`: model, optimizer, scheduler and the pickled RNG states."""
    import torch  # noqa: PLC0415
    from accelerate import Accelerator  # noqa: PLC0415

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    out = folder / "accelerate-state"
    accelerator.save_state(str(out))
    return out


RUN_FOLDERS: dict[str, Callable[[Path], Path]] = {
    "transformers-trainer": transformers_trainer_folder,
    "lightning": lightning_checkpoint_folder,
    "accelerate-state": accelerate_state_folder,
}
"""Each run's builder: it writes its folder under the given one and returns it."""

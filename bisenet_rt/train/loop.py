"""The booster training loop: BiSeNetV2 with its four aux heads, OHEM on every head, SGD + warm-up/poly.

One process per device. Launched by `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set) it runs
DistributedDataParallel, with SyncBatchNorm on GPUs; `batch` is then per process. Mixed precision
(FP16 autocast with a gradient scaler) is used on CUDA only. Samples are drawn by a deterministic
sampler and augmented from per-sample seeds, and the training state holds the model, optimizer,
scheduler, gradient scaler, iteration and RNG states, so `resume` continues the run exactly.
"""
from __future__ import annotations

import logging
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..classes import DEFAULT_MODEL_SIZE, IGNORE_INDEX
from ..atomic import disk_full, is_disk_full, write_atomic
from ..errors import ConfigError, DataError
from ..families import MMSEG, BGAVariant
from ..model import AUX_HEAD_NAMES, BiSeNetV2, load_checkpoint, save_checkpoint
from ..model.checkpoint import POINTWISE_BIAS as _POINTWISE_BIAS
from ..sizes import format_size
from .augment import AugmentConfig, TrainAugment, sample_rng
from .config import (LOG_NAME, MODEL_NAME, STATE_FORMAT, STATE_NAME, SUMMARY_NAME, TrainConfig, state_path,
                     check_resumed, describe_recipe, read_state, resolve_run_recipe)
from .losses import OhemCrossEntropy
from .optim import WarmupPolyLR, aux_push, build_optimizer
from .qat import Int8FakeQuant, float_labels

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate_model", "export_inference_model", "STATE_NAME",
           "MODEL_NAME", "LOG_NAME", "SUMMARY_NAME"]

_log = logging.getLogger(__name__)

@dataclasses.dataclass
class TrainResult:
    """Where the run left its files, how long it took and what it reached."""

    out: Path
    model: Path
    state: Path
    iteration: int
    wall_s: float
    first_loss: float | None
    last_loss: float | None
    metrics: dict[str, Any] | None
    demo: Path | None = None


# -- processes and devices -----------------------------------------------------------------------
@dataclasses.dataclass
class _Dist:
    """This process's place in a torchrun job (a job of one without torchrun)."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> "_Dist":
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda, but PyTorch sees no CUDA GPU here; use --device cpu")
        dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            torch.backends.cudnn.benchmark = True
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(rank, world, local_rank, dev)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (a list of one without torchrun)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        """Mean of a scalar over the ranks (for logging)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# -- data ----------------------------------------------------------------------------------------
class _DrawSampler(torch.utils.data.Sampler):
    """Yields (draw, index) keys for iterations [start, end): draw numbers are global across ranks.

    Draw d belongs to iteration d // (batch * world); indices walk a fresh seeded permutation of
    the dataset every epoch, so the stream depends on the seed alone.
    """

    def __init__(self, n: int, *, seed: int, batch: int, rank: int, world: int, start: int, end: int) -> None:
        self.n, self.seed, self.batch, self.rank, self.world = n, seed, batch, rank, world
        self.start, self.end = start, end

    def __len__(self) -> int:
        return (self.end - self.start) * self.batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, perm = -1, np.empty(0, np.int64)
        for it in range(self.start, self.end):
            for j in range(self.batch):
                draw = (it * self.world + self.rank) * self.batch + j
                e, pos = divmod(draw, self.n)
                if e != epoch:
                    epoch, perm = e, np.random.default_rng([self.seed, e, 0x5EED]).permutation(self.n)
                yield draw, int(perm[pos])


class _AugmentedSet(torch.utils.data.Dataset):
    """Dataset items keyed by (draw, index), augmented with the draw's own generator."""

    def __init__(self, base: Any, augment: TrainAugment, seed: int) -> None:
        self.base, self.augment, self.seed = base, augment, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        draw, index = key
        image, label = self.base[index]
        return self.augment(image, label, sample_rng(self.seed, draw))


#: How DataLoader workers start: from a fork server, not by forking this process, whose ONNX Runtime, OpenVINO
#: and OpenMP thread pools (from evaluation or an earlier run in the same process) are unsafe to fork.
_WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(0)  # workers are the parallelism; keep each one single-threaded
    torch.set_num_threads(1)


def _open_split(root: Path | None, split: str, skip_bad: bool = False) -> Any:
    if root is None:
        raise ConfigError("no dataset given; pass --data ROOT (a Cityscapes-layout tree or a list file)")
    from ..data import open_dataset

    dataset = open_dataset(root, split, skip_bad=skip_bad)
    if dataset.skipped:
        _log.warning(f"skipped {dataset.skipped} bad {split} frame(s); first: {dataset.problems[0]}")
    return dataset


# -- evaluation ----------------------------------------------------------------------------------
def evaluate_model(model: nn.Module, dataset: Any, *, model_size: tuple[int, int] = DEFAULT_MODEL_SIZE,
                   device: str | torch.device = "cpu", limit: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Scores (bisenet_rt.apps.metrics: mIoU, per-class IoU, pixel accuracy) of `model` on `dataset`.

    Frames go through the PyTorch reference (`model.reference`) at `model_size` (resize in, logits resized back to
    the frame), as an exported graph would run them; `limit` scores only the first frames.
    """
    from tqdm import tqdm

    from ..classes import class_names
    from ..apps.metrics import ConfusionMatrix
    from ..model.reference import reference_labels

    count = len(dataset) if limit is None else min(limit, len(dataset))
    matrix = ConfusionMatrix(int(dataset.num_classes))
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(count), desc="eval", unit="frame", disable=not progress, leave=False):
            image, label = dataset[i]
            frame = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
            matrix.update(reference_labels(model, frame, model_size)[0].cpu().numpy(), label)
    finally:
        model.train(was_training)
    names = getattr(dataset, "names", None) or class_names(int(dataset.num_classes))
    return matrix.scores(names).to_json()


# -- state ---------------------------------------------------------------------------------------
def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _atomic_save(obj: Any, path: Path) -> None:
    from ..atomic import replacing

    with replacing(path) as tmp:
        torch.save(obj, tmp)


def _check_out(config: TrainConfig) -> None:
    """Refuse to write over an earlier run unless resuming it or forced, and over any input file (never)."""
    from ..outputs import check_outputs, same_file

    out = config.out
    earlier = [name for name in (MODEL_NAME, STATE_NAME, LOG_NAME, SUMMARY_NAME) if (out / name).exists()]
    resumed = state_path(config.resume).parent if config.resume is not None else None
    if earlier and not config.force and (resumed is None or not same_file(resumed, out)):
        why = (f"resuming {config.resume} writes into {out}, which holds another run" if resumed is not None
               else f"{out} holds an earlier run")
        raise ConfigError(f"--out {out}: {why} ({', '.join(earlier)}); pass --resume {out} to continue that run, "
                          "--force to replace it, or choose another --out")
    outputs = [(out / MODEL_NAME, "the trained model"), (out / SUMMARY_NAME, "the run's summary"),
               (out / LOG_NAME, "the run's log")]
    if resumed is None:  # a resumed run rewrites the state it started from, as it should
        outputs.append((out / STATE_NAME, "the training state"))
    if config.export_demo is not None:
        outputs.append((Path(config.export_demo), "the --export-demo model"))
    inputs = [(Path(config.weights), "the --weights checkpoint")] if config.weights is not None else []
    if config.data is not None and Path(config.data).is_file():
        inputs.append((Path(config.data), "the --data list file"))
    check_outputs(outputs, inputs)


# -- the loop ------------------------------------------------------------------------------------
class _Logger:
    """Rank-0 log lines on stdout and JSON records in out/log.jsonl."""

    def __init__(self, path: Path | None, *, append: bool) -> None:
        self._path = path
        self._file = open(path, "a" if append else "w", encoding="utf-8") if path is not None else None

    def __call__(self, record: dict[str, Any], line: str | None = None) -> None:
        if self._file is None or self._path is None:
            return
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            if is_disk_full(exc, self._path.parent):
                raise disk_full(self._path) from exc
            raise
        if line:
            _log.info(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _interval_mean(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The last step's record with every loss and agreement averaged over `records` (lists element by element)."""
    out = dict(records[-1])
    for key, value in records[-1].items():
        if key.startswith(("loss", "int8_")):
            values = np.array([r[key] for r in records], dtype=np.float64)
            out[key] = values.mean(axis=0).tolist()
    return out


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    valid = labels[labels != IGNORE_INDEX]
    if valid.numel() and int(valid.max()) >= num_classes:
        raise DataError(f"a training label holds class id {int(valid.max())}, but the dataset has {num_classes} "
                        f"classes (ids 0..{num_classes - 1}, {IGNORE_INDEX} = ignore); check the label files")


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient flowing back is multiplied by `scale` (0: the input learns nothing from it)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def _has_aux_heads(weights: Path | None) -> bool:
    """Whether a checkpoint holds trained booster heads in our layout."""
    from ..model.checkpoint import read_checkpoint

    return weights is not None and any(k.startswith(AUX_HEAD_NAMES) for k in read_checkpoint(weights)[0])


class _Run:
    """One process's training objects: the model (and its DDP wrapper), optimizer, schedule, scaler."""

    def __init__(self, config: TrainConfig, dist: _Dist, num_classes: int, state: dict[str, Any] | None) -> None:
        self.config, self.dist, self.num_classes = config, dist, num_classes
        torch.manual_seed(config.seed)
        from_mmseg = state is not None and _POINTWISE_BIAS in state["model"]  # resuming a run from MMSeg weights
        self.model = BiSeNetV2(num_classes, aux_heads=True, bga=MMSEG.bga if from_mmseg else BGAVariant())
        if state is not None:
            self.model.load_state_dict(state["model"])
        elif config.weights is not None:
            # The start's own network: its BGA variant and its family's normalization go on training.
            self.model = load_checkpoint(config.weights, aux_heads=True, num_classes=num_classes)
        self.model.to(dist.device).train()
        self.net: nn.Module = self.model
        self.fake_quant: Int8FakeQuant | None = None
        if config.qat:
            if dist.world > 1:
                raise ConfigError("qat fine-tuning runs in one process; start it without torchrun")
            self.fake_quant = Int8FakeQuant(self.model, keep_float=[self.model.head.conv_out[-1]])
        elif dist.world > 1:
            if dist.device.type == "cuda":
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
        if None in (config.aux_head_start, config.aux_lr):
            resolve_run_recipe(config,
                               fresh_aux=config.fine_tune and not config.qat and not _has_aux_heads(config.weights))
        # Batch-norm layers of the network (not of the aux heads, which are not used for inference) kept in eval mode.
        self.frozen_bn = [m for name, m in self.model.named_modules() if config.freeze_bn
                          and isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(AUX_HEAD_NAMES)]
        # The share of the aux heads' gradient that reaches the network; they learn from their loss regardless.
        self.aux_push = 1.0
        for head in self.model.booster_heads():
            head.register_forward_pre_hook(self._hold_back)
        assert config.lr is not None and config.warmup_iters is not None and config.aux_lr is not None  # filled in
        aux_lr = {name: config.aux_lr / config.lr for name in AUX_HEAD_NAMES} if config.aux_lr != config.lr else None
        self.optimizer = build_optimizer(self.model, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, lr_mult=aux_lr)
        self.scheduler = WarmupPolyLR(self.optimizer, max_iters=config.iters, warmup_iters=config.warmup_iters)
        self.amp = dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = OhemCrossEntropy()
        self.start = 0
        # Dropout draws from this stream; each rank gets its own, all derived from the seed.
        torch.manual_seed(config.seed * 1_000_003 + dist.rank + 1)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"][dist.rank], dist.device)
            self.start = int(state["iteration"])

    def _hold_back(self, _head: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """An aux head's input, passing back only `aux_push` of the head's gradient (none during its head start)."""
        if self.aux_push == 1.0:
            return args
        return (args[0].detach() if self.aux_push == 0.0 else _ScaleGrad.apply(args[0], self.aux_push), *args[1:])

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """One SGD step on a uint8 batch; returns the losses (main + each aux, and their sum) and the lr."""
        from ..model.reference import preprocess

        _check_labels(labels, self.num_classes)
        x = preprocess(images.to(self.dist.device, non_blocking=True), self.config.crop, self.model.family.normalization)
        y = labels.to(self.dist.device, non_blocking=True).long()
        lr = self.scheduler.get_last_lr()[0]
        if self.fake_quant is not None:
            return self._qat_step(x, y, lr)
        self.aux_push = aux_push(self.scheduler.last_epoch, head_start=self.config.aux_head_start or 0)
        for bn in self.frozen_bn:
            bn.eval()
        with torch.autocast(device_type=self.dist.device.type, dtype=torch.float16, enabled=self.amp):
            logits, aux = self.net(x)
        main_loss = self.criterion(logits, y)
        aux_losses = [self.criterion(a, y) for a in aux]
        loss = main_loss + sum(aux_losses)
        self._update(loss)
        return {"loss": float(loss.detach()), "loss_main": float(main_loss.detach()),
                "loss_aux": [float(a.detach()) for a in aux_losses], "lr": lr, "aux_push": self.aux_push}

    def _update(self, loss: torch.Tensor) -> None:
        """Back-propagate `loss` and take one optimizer and schedule step (through the AMP scaler)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def _qat_step(self, x: torch.Tensor, y: torch.Tensor, lr: float | torch.Tensor) -> dict[str, Any]:
        """A float pass trained on the labels and a fake-int8 pass trained to label as the float pass does."""
        assert self.fake_quant is not None  # step() takes this path only in a QAT run
        self.model.eval()  # frozen BN statistics and no dropout: both passes are the inference function
        self.fake_quant.enabled = False
        with torch.autocast(device_type=self.dist.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(x)
            self.fake_quant.enabled = True
            logits_int8 = self.model(x)
            self.fake_quant.enabled = False
        float_loss = self.criterion(logits, y)
        target = float_labels(logits, y)
        int8_loss = self.criterion(logits_int8, target)
        valid = target != IGNORE_INDEX
        agreement = (logits_int8.detach().argmax(1) == target)[valid].float().mean() if valid.any() else 1.0
        loss = float_loss + self.config.qat_int8_weight * int8_loss
        self._update(loss)
        return {"loss": float(loss.detach()), "loss_main": float(float_loss.detach()),
                "loss_int8": float(int8_loss.detach()), "int8_agreement": float(agreement), "lr": lr}

    def calibrate(self, frames: Any, count: int = 16) -> None:
        """Set the fake-quant ranges from `count` full frames at the evaluation size (QAT runs only)."""
        from ..model.reference import preprocess

        if self.fake_quant is None:
            return
        picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
        batches = (preprocess(torch.from_numpy(np.ascontiguousarray(frames[int(i)][0]))[None].to(self.dist.device),
                              self.config.eval_size, self.model.family.normalization) for i in picks)
        self.model.eval()
        self.fake_quant.calibrate(batches, self.model)
        self.model.train()

    def save(self, iteration: int) -> None:
        """Write the public-layout model and the resumable state (rank 0; every rank's RNG goes in)."""
        rng = self.dist.gather(_rng_state(self.dist.device))
        if self.dist.main:
            out = self.config.out
            save_checkpoint(self.model, out / MODEL_NAME)
            _atomic_save({"format": STATE_FORMAT, "iteration": iteration, "world": self.dist.world,
                          "config": self.config.to_json(), "model": self.model.state_dict(),
                          "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                          "scaler": self.scaler.state_dict(), "rng": rng}, out / STATE_NAME)
        self.dist.barrier()

    def evaluate(self, val_set: Any, *, limit: int | None = None) -> dict[str, Any] | None:
        """Scores on the val split (rank 0; the others wait), or None without one."""
        metrics = None
        if self.dist.main and val_set is not None:
            metrics = evaluate_model(self.model, val_set, model_size=self.config.eval_size, device=self.dist.device,
                                     limit=limit)
        self.dist.barrier()
        return metrics


def _loader(config: TrainConfig, dist: _Dist, train_set: Any, start: int, end: int) -> torch.utils.data.DataLoader:
    """Batches of augmented crops for iterations [start, end), the same for any number of workers."""
    augment = TrainAugment(AugmentConfig(crop=config.crop, scales=config.scales))
    sampler = _DrawSampler(len(train_set), seed=config.seed, batch=config.batch, rank=dist.rank, world=dist.world,
                           start=start, end=end)
    return torch.utils.data.DataLoader(
        _AugmentedSet(train_set, augment, config.seed), batch_size=config.batch, sampler=sampler,
        num_workers=config.workers, pin_memory=dist.device.type == "cuda", worker_init_fn=_worker_init,
        multiprocessing_context=_WORKER_START if config.workers else None,
        generator=torch.Generator().manual_seed(config.seed))  # keeps the global RNG (dropout) untouched


def train(config: TrainConfig, *, train_set: Any = None, val_set: Any = None) -> TrainResult:
    """Train BiSeNetV2 with the booster recipe; returns where the model and state went.

    `train_set` / `val_set` default to `open_dataset(config.data, "train" / "val")`; items are
    (BGR uint8 H x W x 3, uint8 H x W train ids with 255 = ignore) and the set has `.num_classes`.
    """
    _check_out(config)
    dist = _Dist.from_env(config.device)
    try:
        if train_set is None:
            train_set = _open_split(config.data, "train", config.skip_bad)
        if len(train_set) == 0:
            raise DataError(f"the training split of {config.data} has no frames")
        state = None
        if config.resume is not None:
            state = read_state(config.resume)[1]
            check_resumed(state, config, dist.world)
        out = config.out
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
        run = _Run(config, dist, int(train_set.num_classes), state)
        run.calibrate(train_set)
        start, end = run.start, config.stop_at or config.iters
        if end < start:
            raise ConfigError(f"--stop-at {end} lies before the iteration the run is resumed at, {start}")
        if val_set is None and dist.main and (config.eval_every or end == config.iters):
            val_set = _load_val(config.data)
        log = _Logger(out / LOG_NAME if dist.main else None, append=state is not None)
        if dist.main:
            kind = "quantization-aware fine-tune" if config.qat else "aux heads"
            _log.info(f"training BiSeNetV2 ({run.num_classes} classes, {kind}) on {len(train_set)} frames: iterations "
                      f"{start}..{end} of {config.iters}, batch {config.batch} x {dist.world} process(es), crop "
                      f"{format_size(config.crop)}, scales {list(config.scales)}, lr {config.lr}, warm-up "
                      f"{config.warmup_iters}, device {dist.device}{', AMP' if run.amp else ''}"
                      + (f"; resuming {config.out} at iteration {start}" if state is not None else ""))
            recipe = describe_recipe(config)
            if recipe is not None and state is None:
                _log.info(recipe)

        def evaluate(iteration: int, limit: int | None = None) -> dict[str, Any] | None:
            metrics = run.evaluate(val_set, limit=limit)
            if metrics is not None:
                log({"iter": iteration, "eval": metrics},
                    f"eval @ {iteration}{' (the checkpoint)' if iteration == 0 else ''}: mIoU "
                    f"{100 * metrics['miou']:.2f}  pixel acc {100 * metrics['pixel_accuracy']:.2f} "
                    f"({metrics['frames']} val frames at {format_size(config.eval_size)})")
            return metrics

        first_loss = last_loss = metrics = demo = None
        if config.fine_tune and config.eval_every and start == 0:
            evaluate(0, config.eval_limit)  # where the fine-tune starts from, so a regression shows
        interval: list[dict[str, Any]] = []
        t_start = t_interval = time.perf_counter()
        iteration = start
        for iteration, (images, labels) in enumerate(_loader(config, dist, train_set, start, end), start=start + 1):
            record = run.step(images, labels)
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"the loss became {record['loss']} at iteration {iteration}; "
                                         "lower --lr or check the data")
            interval.append(record)
            if iteration % config.log_every == 0 or iteration == end:
                now = time.perf_counter()
                record = _interval_mean(interval)  # losses: means since the last line
                record["loss"] = last_loss = dist.mean(record["loss"])
                record["loss_main"] = dist.mean(record["loss_main"])
                first_loss = last_loss if first_loss is None else first_loss
                speed = len(interval) / max(now - t_interval, 1e-9)
                eta = (end - iteration) / speed
                log({"iter": iteration, **record, "it_per_s": speed, "eta_s": eta, "elapsed_s": now - t_start},
                    f"it {iteration}/{config.iters}  loss {last_loss:.4f} (main head {record['loss_main']:.4f})  "
                    f"lr {record['lr']:.5f}  {speed:.3f} it/s  eta {_format_eta(eta)}"
                    + (f"  int8 labels as float {100 * record['int8_agreement']:.2f}%"
                       if "int8_agreement" in record else ""))
                interval, t_interval = [], now
            if config.save_every and iteration % config.save_every == 0 and iteration != end:
                run.save(iteration)
            if config.eval_every and iteration % config.eval_every == 0 and iteration != config.iters:
                evaluate(iteration, config.eval_limit)
        wall = time.perf_counter() - t_start
        run.save(iteration)
        if iteration == config.iters:
            metrics = evaluate(iteration)
            if dist.main and config.export_demo is not None:
                demo = export_inference_model(run.model, config.export_demo)
        if dist.main:
            summary = {"iteration": iteration, "iters": config.iters, "wall_s": wall, "first_loss": first_loss,
                       "last_loss": last_loss, "eval": metrics, "world": dist.world, "device": str(dist.device),
                       "config": config.to_json(), "torch": torch.__version__, "argv": sys.argv}
            write_atomic(out / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
            _log.info(f"done: {iteration - start} iterations in {_format_eta(wall)}; model {out / MODEL_NAME}, "
                      f"state {out / STATE_NAME}" + (f", demo {demo}" if demo else ""))
        log.close()
        return TrainResult(out=out, model=out / MODEL_NAME, state=out / STATE_NAME, iteration=iteration,
                           wall_s=wall, first_loss=first_loss, last_loss=last_loss, metrics=metrics, demo=demo)
    finally:
        dist.close()


def _load_val(root: Path | None) -> Any:
    """The val split, or None (with a note) where the dataset has none."""
    if root is None:
        return None
    try:
        return _open_split(root, "val")
    except (DataError, FileNotFoundError) as exc:
        _log.warning(f"no val split to evaluate on ({exc})")
        return None


def export_inference_model(model: BiSeNetV2, path: str | os.PathLike) -> Path:
    """Save `model` without aux heads, FP16 weights, in the public layout (the small file to ship)."""
    import copy

    inference = copy.deepcopy(model).cpu().strip_aux_heads().eval()
    return save_checkpoint(inference, path, half=True)

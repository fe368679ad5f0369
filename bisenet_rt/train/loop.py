"""The booster training loop: BiSeNetV2 with its four aux heads, OHEM on every head, SGD + warm-up/poly.

One process per device. Launched by `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set) it runs
DistributedDataParallel, with SyncBatchNorm on GPUs; `batch` is then per process. Mixed precision
(FP16 autocast with a gradient scaler) is used on CUDA only. Samples are drawn by a deterministic
sampler and augmented from per-sample seeds, and the training state holds the model, optimizer,
scheduler, gradient scaler, iteration and RNG states, so `resume` continues the run exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..classes import DEFAULT_MODEL_SIZE, IGNORE_INDEX
from ..errors import CheckpointError, DataError
from ..model import BiSeNetV2, save_checkpoint
from ..sizes import check_model_size, format_size
from .augment import DEFAULT_SCALES, AugmentConfig, TrainAugment, sample_rng
from .losses import OhemCrossEntropy
from .optim import WarmupPolyLR, build_optimizer

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate_model", "export_inference_model", "STATE_NAME",
           "MODEL_NAME", "LOG_NAME", "SUMMARY_NAME"]

STATE_NAME = "train_state.pt"
MODEL_NAME = "model.pth"
LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
_STATE_FORMAT = 1
#: Options that define the run's sample stream and schedule: a resumed run must use the same values.
_SCHEDULE_FIELDS = ("iters", "batch", "crop", "scales", "lr", "momentum", "weight_decay", "warmup_iters", "seed")


@dataclasses.dataclass
class TrainConfig:
    """Everything `train` needs; the defaults train a small model on a laptop CPU.

    `batch` is per process. `warmup_iters=None` means min(1000, iters // 10). `eval_every` and
    `save_every` of 0 mean only at the end. `stop_at` ends the run early at that iteration with a
    resumable state (for pre-emptible jobs). `eval_size` is the model size (w, h) frames are
    resized to for evaluation, as the exported graph does.
    """

    data: Path | None = None
    out: Path = Path("runs/train")
    iters: int = 300
    batch: int = 8
    crop: tuple[int, int] = (512, 256)
    scales: tuple[float, ...] = DEFAULT_SCALES
    lr: float = 5e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int | None = None
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    eval_every: int = 0
    eval_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    save_every: int = 0
    log_every: int = 10
    resume: Path | None = None
    stop_at: int | None = None
    export_demo: Path | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.crop = AugmentConfig(crop=self.crop).crop
        self.scales = AugmentConfig(scales=self.scales).scales
        self.eval_size = check_model_size(self.eval_size)
        for name in ("iters", "batch", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("workers", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.warmup_iters is None:
            self.warmup_iters = min(1000, self.iters // 10)
        if not 0 <= self.warmup_iters <= self.iters:
            raise ValueError(f"warmup_iters must be in [0, iters={self.iters}], got {self.warmup_iters}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise ValueError(f"stop_at must be in [1, iters={self.iters}], got {self.stop_at}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able values (paths as strings, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
        return out


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
            raise ValueError("--device cuda, but PyTorch sees no CUDA GPU here; use --device cpu")
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


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(0)  # workers are the parallelism; keep each one single-threaded
    torch.set_num_threads(1)


def _open_split(root: Path | None, split: str) -> Any:
    if root is None:
        raise ValueError("no dataset given; pass --data ROOT (a Cityscapes-layout tree or a list file)")
    from ..data import open_dataset

    return open_dataset(root, split)


# -- evaluation ----------------------------------------------------------------------------------
def evaluate_model(model: nn.Module, dataset: Any, *, model_size: tuple[int, int] = DEFAULT_MODEL_SIZE,
                   device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """mIoU of `model` (eval mode, the reference pipeline at `model_size`) over every frame of `dataset`.

    One confusion matrix over the split; ignore pixels skipped; classes absent from both
    prediction and ground truth are left out of the mean.
    """
    from tqdm import tqdm

    from ..pipeline import reference_labels

    n = int(dataset.num_classes)
    confusion = np.zeros((n, n), np.int64)
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(len(dataset)), desc="eval", unit="frame", disable=not progress, leave=False):
            image, label = dataset[i]
            frame = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
            pred = reference_labels(model, frame, model_size)[0].cpu().numpy().astype(np.int64)
            gt = np.asarray(label, np.int64)
            keep = gt != IGNORE_INDEX
            confusion += np.bincount(gt[keep] * n + pred[keep], minlength=n * n).reshape(n, n)
    finally:
        model.train(was_training)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)) if present.any() else float("nan"),
            "pixel_acc": float(tp.sum() / max(confusion.sum(), 1)),
            "iou": [None if math.isnan(v) else float(v) for v in iou],
            "frames": len(dataset)}


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
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resolve_resume(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}; --resume takes the {STATE_NAME} a run wrote "
                              "(or its output folder)")
    return path


def _load_state(path: Path, config: TrainConfig, world: int) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the training state ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise CheckpointError(f"{path}: not a bisenet-rt training state (a public-layout model checkpoint cannot "
                              f"be resumed; resume from the {STATE_NAME} written next to it)")
    saved, now = state["config"], config.to_json()
    differ = [f"--{k.replace('_', '-')} {saved[k]} (saved) vs {now[k]} (now)"
              for k in _SCHEDULE_FIELDS if saved[k] != now[k]]
    if state["world"] != world:
        differ.append(f"{state['world']} processes (saved) vs {world} (now)")
    if differ:
        raise ValueError(f"{path}: the resumed run must repeat the original options; differing: " + "; ".join(differ))
    return state


# -- the loop ------------------------------------------------------------------------------------
class _Logger:
    """Rank-0 log lines on stdout and JSON records in out/log.jsonl."""

    def __init__(self, path: Path | None, *, append: bool) -> None:
        self._file = open(path, "a" if append else "w", encoding="utf-8") if path is not None else None

    def __call__(self, record: dict[str, Any], line: str | None = None) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if line:
            print(line, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    valid = labels[labels != IGNORE_INDEX]
    if valid.numel() and int(valid.max()) >= num_classes:
        raise DataError(f"a training label holds class id {int(valid.max())}, but the dataset has {num_classes} "
                        f"classes (ids 0..{num_classes - 1}, {IGNORE_INDEX} = ignore); check the label files")


def train(config: TrainConfig, *, train_set: Any = None, val_set: Any = None) -> TrainResult:
    """Train BiSeNetV2 with the booster recipe; returns where the model and state went.

    `train_set` / `val_set` default to `open_dataset(config.data, "train" / "val")`; items are
    (BGR uint8 H x W x 3, uint8 H x W train ids with 255 = ignore) and the set has `.num_classes`.
    """
    from ..pipeline import preprocess

    dist = _Dist.from_env(config.device)
    try:
        if train_set is None:
            train_set = _open_split(config.data, "train")
        if len(train_set) == 0:
            raise DataError(f"the training split of {config.data} has no frames")
        num_classes = int(train_set.num_classes)
        out = config.out
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
        state = _load_state(_resolve_resume(config.resume), config, dist.world) if config.resume else None

        torch.manual_seed(config.seed)
        model = BiSeNetV2(num_classes, aux_heads=True)
        if state is not None:
            model.load_state_dict(state["model"])
        model.to(dist.device).train()
        net: nn.Module = model
        if dist.world > 1:
            if dist.device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
        optimizer = build_optimizer(model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        scheduler = WarmupPolyLR(optimizer, max_iters=config.iters, warmup_iters=config.warmup_iters)
        use_amp = dist.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        start = 0
        # Dropout draws from this stream; each rank gets its own, all derived from the seed.
        torch.manual_seed(config.seed * 1_000_003 + dist.rank + 1)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"][dist.rank], dist.device)
            start = int(state["iteration"])
        end = config.stop_at or config.iters
        if end < start:
            raise ValueError(f"stop_at={end} lies before the resumed iteration {start}")

        augment = TrainAugment(AugmentConfig(crop=config.crop, scales=config.scales))
        loader = torch.utils.data.DataLoader(
            _AugmentedSet(train_set, augment, config.seed), batch_size=config.batch,
            sampler=_DrawSampler(len(train_set), seed=config.seed, batch=config.batch, rank=dist.rank,
                                 world=dist.world, start=start, end=end),
            num_workers=config.workers, pin_memory=dist.device.type == "cuda", worker_init_fn=_worker_init,
            generator=torch.Generator().manual_seed(config.seed))  # keeps the global RNG untouched
        criterion = OhemCrossEntropy()
        log = _Logger(out / LOG_NAME if dist.main else None, append=state is not None)
        model_path, state_path = out / MODEL_NAME, out / STATE_NAME
        if val_set is None and (config.eval_every or end == config.iters) and dist.main:
            val_set = _load_val(config.data)

        def save(iteration: int) -> None:
            rng = dist.gather(_rng_state(dist.device))
            if dist.main:
                save_checkpoint(model, model_path)
                _atomic_save({"format": _STATE_FORMAT, "iteration": iteration, "world": dist.world,
                              "config": config.to_json(), "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                              "scaler": scaler.state_dict(), "rng": rng}, state_path)
            dist.barrier()

        def evaluate(iteration: int) -> dict[str, Any] | None:
            metrics = None
            if dist.main and val_set is not None:
                metrics = evaluate_model(model, val_set, model_size=config.eval_size, device=dist.device)
                log({"iter": iteration, "eval": metrics},
                    f"eval @ {iteration}: mIoU {100 * metrics['miou']:.2f}  pixel acc {100 * metrics['pixel_acc']:.2f} "
                    f"({metrics['frames']} val frames at {format_size(config.eval_size)})")
            dist.barrier()
            return metrics

        if dist.main:
            print(f"training BiSeNetV2 ({num_classes} classes, aux heads) on {len(train_set)} frames: iterations "
                  f"{start}..{end} of {config.iters}, batch {config.batch} x {dist.world} process(es), crop "
                  f"{format_size(config.crop)}, scales {list(config.scales)}, lr {config.lr}, warm-up "
                  f"{config.warmup_iters}, device {dist.device}{', AMP' if use_amp else ''}", flush=True)
        first_loss = last_loss = None
        interval_loss, interval_n, t_interval = 0.0, 0, time.perf_counter()
        t_start = time.perf_counter()
        metrics = None
        iteration = start
        for iteration, (images, labels) in enumerate(loader, start=start + 1):
            _check_labels(labels, num_classes)
            x = preprocess(images.to(dist.device, non_blocking=True), config.crop)
            y = labels.to(dist.device, non_blocking=True).long()
            lr = scheduler.get_last_lr()[0]
            with torch.autocast(device_type=dist.device.type, dtype=torch.float16, enabled=use_amp):
                logits, aux = net(x)
            main_loss = criterion(logits, y)
            aux_losses = [criterion(a, y) for a in aux]
            loss = main_loss + sum(aux_losses)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()

            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at iteration {iteration}; lower --lr or check the data")
            interval_loss += value
            interval_n += 1
            if iteration % config.log_every == 0 or iteration == end:
                now = time.perf_counter()
                mean_loss = dist.mean(interval_loss / interval_n)
                speed = interval_n / max(now - t_interval, 1e-9)
                eta = (end - iteration) / speed
                first_loss = mean_loss if first_loss is None else first_loss
                last_loss = mean_loss
                log({"iter": iteration, "loss": mean_loss, "loss_main": float(main_loss.detach()),
                     "loss_aux": [float(a.detach()) for a in aux_losses], "lr": lr, "it_per_s": speed,
                     "eta_s": eta, "elapsed_s": now - t_start},
                    f"it {iteration}/{config.iters}  loss {mean_loss:.4f}  lr {lr:.5f}  {speed:.3f} it/s  "
                    f"eta {_format_eta(eta)}")
                interval_loss, interval_n, t_interval = 0.0, 0, now
            if config.save_every and iteration % config.save_every == 0 and iteration != end:
                save(iteration)
            if config.eval_every and iteration % config.eval_every == 0 and iteration != config.iters:
                evaluate(iteration)
        wall = time.perf_counter() - t_start
        save(iteration)
        demo = None
        if iteration == config.iters:
            metrics = evaluate(iteration)
            if dist.main and config.export_demo is not None:
                demo = export_inference_model(model, config.export_demo)
        if dist.main:
            summary = {"iteration": iteration, "iters": config.iters, "wall_s": wall, "first_loss": first_loss,
                       "last_loss": last_loss, "eval": metrics, "world": dist.world, "device": str(dist.device),
                       "config": config.to_json(), "torch": torch.__version__, "argv": sys.argv}
            (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
            print(f"done: {iteration - start} iterations in {_format_eta(wall)}; model {model_path}, "
                  f"state {state_path}" + (f", demo {demo}" if demo else ""), flush=True)
        log.close()
        return TrainResult(out=out, model=model_path, state=state_path, iteration=iteration, wall_s=wall,
                           first_loss=first_loss, last_loss=last_loss, metrics=metrics, demo=demo)
    finally:
        dist.close()


def _load_val(root: Path | None) -> Any:
    """The val split, or None (with a note) where the dataset has none."""
    if root is None:
        return None
    try:
        return _open_split(root, "val")
    except (DataError, FileNotFoundError) as exc:
        print(f"note: no val split to evaluate on ({exc})", file=sys.stderr)
        return None


def export_inference_model(model: BiSeNetV2, path: str | os.PathLike) -> Path:
    """Save `model` without aux heads, FP16 weights, in the public layout (the small file to ship)."""
    import copy

    inference = copy.deepcopy(model).cpu().strip_aux_heads().eval()
    return save_checkpoint(inference, path, half=True)

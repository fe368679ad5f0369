"""What a training run is: `TrainConfig`, the fine-tuning recipe its defaults follow when the run starts from
trained weights, and the run a resume restores (its data, options and folder) from the state it wrote.

The recipe: a network trained from scratch gets the paper's schedule (lr 0.05, warm-up, booster aux heads at
full weight). A network that already knows something (`weights`) is fine-tuned: a tenth of that lr (what
CoinCheung/BiSeNet trains BiSeNetV2 with, and fine-tunes with through `--finetune-from`), the same warm-up, aux
heads the checkpoint lacks trained alone for a head start before their gradients reach the network (freshly
initialised heads have losses many times the main head's, and their gradients would rewrite the semantic
branch first), the checkpoint's batch-norm statistics kept (MMSegmentation's `norm_eval`, detectron2's frozen
batch norm: re-estimated in train mode from a few frames at random crop scales, they drift from the ones the
checkpoint was evaluated with, and that alone costs points before any weight has moved), and periodic
evaluations from the checkpoint's own score on, so a regression shows while it happens. Every value the recipe
picks yields to one given explicitly.
"""
from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

from ..classes import DEFAULT_MODEL_SIZE
from ..errors import CheckpointError, ConfigError
from ..sizes import check_batch, check_model_size, format_size
from .augment import DEFAULT_SCALES, AugmentConfig
from .qat import INT8_LOSS_WEIGHT

__all__ = ["TrainConfig", "SCRATCH_LR", "FINE_TUNE_LR", "FINE_TUNE_EVALS", "RUN_FIELDS", "SESSION_FIELDS",
           "option_name", "describe_recipe", "fine_tune_aux_head_start", "resolve_run_recipe", "state_path",
           "read_state", "resume_config", "check_resumed", "STATE_NAME", "MODEL_NAME", "LOG_NAME", "SUMMARY_NAME"]

STATE_NAME = "train_state.pt"
MODEL_NAME = "model.pth"
LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
STATE_FORMAT = 1

#: The paper's base learning rate, for a network trained from scratch (kaiming initialisation).
SCRATCH_LR = 5e-2
#: Base learning rate of a fine-tune: a tenth of the paper's, CoinCheung/BiSeNet's `lr_start` for BiSeNetV2
#: (configs/bisenetv2_city.py), which its `--finetune-from` keeps.
FINE_TUNE_LR = 5e-3
#: Periodic evaluations spread over a fine-tune, after one of the checkpoint itself before the first step.
FINE_TUNE_EVALS = 5

#: The command-line spelling of each field whose flag is not --field-name (momentum is set through the API only).
_FLAGS = {"warmup_iters": "--warmup", "momentum": "momentum"}
#: Switches with a --no- form on the command line.
_NEGATABLE = ("freeze_bn",)
#: Fields that decide what is trained and how it is scored (sample stream, schedule, objective, evaluation size):
#: a resumed run keeps them, and a value given again must be the run's.
RUN_FIELDS = ("data", "iters", "batch", "crop", "scales", "lr", "momentum", "weight_decay", "warmup_iters", "seed",
              "qat", "qat_int8_weight", "aux_head_start", "aux_lr", "freeze_bn", "eval_size",
              "skip_bad")
#: Fields a resumed run may change: how it runs and reports, not what it trains.
SESSION_FIELDS = ("workers", "device", "eval_every", "eval_limit", "save_every", "log_every", "stop_at", "export_demo")
#: What a state written before a field existed ran with.
_BEFORE_FIELD: dict[str, Any] = {"qat": False, "qat_int8_weight": INT8_LOSS_WEIGHT, "aux_head_start": 0, "aux_lr": None,
                                  "freeze_bn": False}


def option_name(field: str) -> str:
    """The command-line flag of a TrainConfig field ('warmup_iters' -> '--warmup'), for messages."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


@dataclasses.dataclass
class TrainConfig:
    """Everything `train` needs; the defaults train a small model on a laptop CPU.

    `batch` is per process. `lr`, `warmup_iters`, `eval_every`, `aux_head_start`, `aux_lr` and `freeze_bn`
    left None follow the recipe: from scratch lr `SCRATCH_LR`, warm-up min(1000, iters // 10), evaluation at
    the end only, no head start, batch-norm statistics re-estimated; with `weights` (a fine-tune) lr
    `FINE_TUNE_LR`, the same warm-up, an evaluation of the checkpoint before the first step and
    `FINE_TUNE_EVALS` more spread over the run, aux heads the checkpoint lacks trained at `SCRATCH_LR` alone
    for `fine_tune_aux_head_start(iters)` iterations (their gradients reach the network only after that,
    ramped in over as many again), and the checkpoint's batch-norm statistics kept (`freeze_bn`). `eval_every` and `save_every` of 0 mean only at the end.
    `stop_at` ends the run early at that iteration with a resumable state (for pre-emptible jobs).
    `eval_size` is the model size (w, h) frames are resized to for evaluation, as the exported graph does;
    `eval_limit` makes the periodic evaluations use only the first frames of the val split (the final one
    uses all of it). `qat` makes the run a quantization-aware fine-tune (`bisenet_rt.train.qat`) of `weights`
    or a resumed QAT run: BN statistics frozen, no aux heads, one process; `qat_int8_weight` weighs the int8
    pass's loss against the float pass's. An `out` holding an earlier run is refused unless `resume`
    continues that run or `force` replaces it; `resume_config` builds the config that continues a run.
    """

    data: Path | None = None
    out: Path = Path("runs/train")
    iters: int = 300
    batch: int = 8
    crop: tuple[int, int] = (512, 256)
    scales: tuple[float, ...] = DEFAULT_SCALES
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int | None = None
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    eval_every: int | None = None
    eval_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    eval_limit: int | None = None
    save_every: int = 0
    log_every: int = 10
    resume: Path | None = None
    weights: Path | None = None
    stop_at: int | None = None
    export_demo: Path | None = None
    qat: bool = False
    qat_int8_weight: float = INT8_LOSS_WEIGHT
    aux_head_start: int | None = None
    aux_lr: float | None = None
    freeze_bn: bool | None = None
    skip_bad: bool = False  # check every frame first and leave out (and count) bad ones
    force: bool = False  # replace an earlier run in `out` (without it, only resuming that run may write there)
    #: The fields the fine-tuning recipe filled in (not given), for the line that says so.
    recipe: tuple[str, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.crop = AugmentConfig(crop=tuple(self.crop)).crop  # type: ignore[arg-type]
        self.scales = AugmentConfig(scales=tuple(self.scales)).scales
        self.eval_size = check_model_size(tuple(self.eval_size))  # type: ignore[arg-type]
        for name in ("iters", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{option_name(name)} must be at least 1, got {getattr(self, name)}")
        check_batch(self.batch)
        if self.weights is not None and self.resume is not None:
            raise ConfigError("--weights and --resume exclude each other: a resumed run goes on with its own weights "
                              "(to start a new run from them, give --weights RUN/model.pth)")
        recipe = []
        if self.lr is None:
            self.lr = FINE_TUNE_LR if self.fine_tune else SCRATCH_LR
            recipe.append("lr")
        if self.warmup_iters is None:
            self.warmup_iters = min(1000, self.iters // 10)
            recipe.append("warmup_iters")
        if self.eval_every is None:
            self.eval_every = max(1, self.iters // FINE_TUNE_EVALS) if self.fine_tune else 0
            recipe.append("eval_every")
        if self.freeze_bn is None and self.resume is None:  # a resumed run keeps its own
            self.freeze_bn = self.fine_tune and not self.qat  # QAT freezes them its own way
            recipe.append("freeze_bn")
        self.recipe = tuple(recipe) if self.fine_tune else ()
        for name in ("workers", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{option_name(name)} must be 0 or more, got {getattr(self, name)}")
        if self.aux_head_start is not None and self.aux_head_start < 0:
            raise ConfigError(f"--aux-head-start must be 0 or more, got {self.aux_head_start}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"--eval-limit must be at least 1, got {self.eval_limit}")
        if not 0 <= self.warmup_iters <= self.iters:
            raise ConfigError(f"--warmup must be in [0, --iters {self.iters}], got {self.warmup_iters}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise ConfigError(f"--stop-at must be in [1, --iters {self.iters}], got {self.stop_at}")
        for name in ("lr", "momentum", "weight_decay", "qat_int8_weight", "aux_lr"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{option_name(name)} must be a finite number, got {value}")
        for name in ("lr", "aux_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"{option_name(name)} must be positive, got {getattr(self, name)}")
        if not self.qat_int8_weight > 0:
            raise ConfigError(f"--qat-int8-weight must be positive, got {self.qat_int8_weight}")
        if self.freeze_bn and self.weights is None and self.resume is None:
            raise ConfigError("--freeze-bn keeps a checkpoint's batch-norm statistics, and a run from scratch has "
                              "none: give the checkpoint with --weights, or drop --freeze-bn")
        if self.qat and self.weights is None and self.resume is None:
            raise ConfigError("--qat fine-tunes a trained model: give its checkpoint with --weights (or --resume a "
                              "QAT run)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")

    @property
    def fine_tune(self) -> bool:
        """Whether this run starts from trained weights (and so follows the fine-tuning recipe)."""
        return self.weights is not None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able values (paths absolute, as strings; tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.init:
                v = getattr(self, f.name)
                out[f.name] = (str(Path(v).absolute()) if isinstance(v, Path) else list(v) if isinstance(v, tuple)
                               else v)
        return out


def fine_tune_aux_head_start(iters: int) -> int:
    """Iterations the fresh aux heads of a fine-tune learn alone: half the run, at most 1000 (then they join
    over as many again, so in a short run they join only gradually towards its end)."""
    return min(1000, iters // 2)


def resolve_run_recipe(config: TrainConfig, *, fresh_aux: bool) -> None:
    """Fill in what the recipe picks once the network is known: aux heads the checkpoint of a fine-tune lacks
    (`fresh_aux`) learn from scratch, at `SCRATCH_LR`, alone for a head start (otherwise none, at `lr`)."""
    picked = []
    if config.aux_head_start is None:
        config.aux_head_start = fine_tune_aux_head_start(config.iters) if fresh_aux else 0
        picked.append("aux_head_start")
    if config.aux_lr is None:
        config.aux_lr = SCRATCH_LR if fresh_aux else config.lr
        picked.append("aux_lr")
    if config.fine_tune and not config.qat:
        config.recipe += tuple(picked)


def describe_recipe(config: TrainConfig) -> str | None:
    """One line saying which fine-tuning recipe a run from `weights` follows and why, each choice followed by the
    flag that overrides it, or by "(given)" where the command line chose (None from scratch)."""
    if not config.fine_tune:
        return None
    picked = set(config.recipe)

    def how(field: str, flag: str | None = None) -> str:
        return f" ({flag or option_name(field)})" if field in picked else " (given)"

    parts = [f"lr {config.lr:g}" + (f", a tenth of the from-scratch {SCRATCH_LR:g}, so the trained features are "
                                    "adjusted, not rewritten" if "lr" in picked else "") + how("lr"),
             f"warm-up {config.warmup_iters}{how('warmup_iters')}"]
    head_start = config.aux_head_start
    if not config.qat and head_start:
        at = f" at lr {config.aux_lr:g}" if config.aux_lr not in (None, config.lr) else ""
        parts.append(f"the fresh aux heads learn alone{at} for {head_start} iterations, then join over {head_start} "
                     "more" + (", so their large first gradients do not rewrite the network"
                               if "aux_head_start" in picked else "")
                     + (" (--aux-head-start, --aux-lr)" if {"aux_head_start", "aux_lr"} <= picked else " (given)"))
    elif not config.qat and head_start is not None:
        parts.append("aux heads from the checkpoint, no head start (--aux-head-start)" if "aux_head_start" in picked
                     else "no aux head start (given)")
    if not config.qat and config.freeze_bn is not None:
        parts.append(("batch-norm statistics kept from the checkpoint" + (
            ", as a few frames would shift them" if "freeze_bn" in picked else "") if config.freeze_bn
            else "batch-norm statistics re-estimated") + how("freeze_bn", "--no-freeze-bn"))
    parts.append(f"val mIoU of the checkpoint, then every {config.eval_every} iterations{how('eval_every')}"
                 if config.eval_every else f"val mIoU at the end only{how('eval_every')}")
    return f"fine-tuning recipe ({'--qat ' if config.qat else ''}--weights): " + "; ".join(parts)


# -- resuming ------------------------------------------------------------------------------------
def state_path(run: str | Path) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}; --resume takes the folder of a run (or the "
                              f"{STATE_NAME} it wrote)")
    return path


def read_state(run: str | Path) -> tuple[Path, dict[str, Any]]:
    """The state file of a run (its folder or the file itself) and what it holds, checked to be one we wrote."""
    import torch

    path = state_path(run)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, IndexError, KeyError) as exc:
        detail = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise CheckpointError(f"{path}: cannot read the training state ({detail}); it is empty, corrupt, or not one "
                              f"this project wrote: resume from the {STATE_NAME} of a run") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path}: not a bisenet-rt training state (a public-layout model checkpoint cannot "
                              f"be resumed; resume from the {STATE_NAME} written next to it)")
    return path, state


def _saved_values(saved: dict[str, Any]) -> dict[str, Any]:
    """The run's own values of every run and session field (defaults for fields added since it was written)."""
    defaults = TrainConfig().to_json()
    values = {k: saved.get(k, _BEFORE_FIELD.get(k, defaults[k])) for k in RUN_FIELDS + SESSION_FIELDS}
    values["stop_at"] = None  # where the last session stopped, not where this one should
    for k in ("data", "export_demo"):
        values[k] = Path(values[k]) if values[k] is not None else None
    return values


def resume_config(run: str | Path, **given: Any) -> TrainConfig:
    """The config that continues the run in `run` (its folder or state file), as ultralytics' resume=True does.

    The run's data, options and folder are restored. Options in `given` (TrainConfig fields, None = not given)
    may change how the run goes on (`SESSION_FIELDS`: workers, device, evaluation and save cadence, stop_at,
    export_demo); those in `RUN_FIELDS` must be the run's own values, and `out` the run's folder. Anything
    else is refused with one line naming the options.
    """
    unknown = set(given) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError(f"resume_config() got unknown options: {', '.join(sorted(unknown))}")
    given = {k: v for k, v in given.items() if v is not None}  # False is a value: --no-freeze-bn
    path, state = read_state(run)
    folder = path.parent
    if "weights" in given:
        raise ConfigError(f"--weights and --resume exclude each other: a resumed run goes on with its own weights "
                          f"(to start a new run from them, give --weights {folder / MODEL_NAME})")
    if given.pop("force", False):
        raise ConfigError(f"--force replaces a run and --resume continues one: drop --force to continue {folder}, "
                          "or drop --resume to start over")
    if "out" in given:
        from ..outputs import same_file

        if not same_file(given["out"], folder):
            raise ConfigError(f"--out {given['out']}: a resumed run goes on in its own folder, {folder}; drop --out "
                              f"(or give --out {folder})")
    values = _saved_values(state["config"])
    restored = TrainConfig(**values, out=folder, resume=path).to_json()
    session = {k: v for k, v in given.items() if k in SESSION_FIELDS}
    asked = TrainConfig(**{**values, **session, **{k: v for k, v in given.items() if k in RUN_FIELDS}},
                        out=folder, resume=path)
    differ = [f"{_as_given(k, asked.to_json()[k])} (the run: {_shown(k, restored[k])})"
              for k in RUN_FIELDS if k in given and asked.to_json()[k] != restored[k]]
    if differ:
        raise ConfigError(f"--resume {run}: a resumed run keeps the options it was started with, and these differ: "
                          + "; ".join(differ) + "; drop them to continue the run as it was, or start a new run "
                          f"with --weights {folder / MODEL_NAME}")
    return asked


def _as_given(field: str, value: Any) -> str:
    """An option as a user types it: '--crop 64x64', '--qat', '--no-freeze-bn'."""
    return _shown(field, value) if isinstance(value, bool) else f"{option_name(field)} {_shown(field, value)}"


def _shown(field: str, value: Any) -> str:
    """A config value as a user types it: sizes WxH, other lists space-separated, switches as their flag."""
    if isinstance(value, bool):
        flag = option_name(field)
        return flag if value else "--no-" + flag[2:] if field in _NEGATABLE else f"no {flag}"
    if field in ("crop", "eval_size"):
        return format_size(value)
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def check_resumed(state: dict[str, Any], config: TrainConfig, world: int) -> None:
    """Refuse a `config` that resumes `state` with run options other than the run's, or another process count;
    run options it leaves to the recipe (None) take the run's values."""
    saved = _saved_values(state["config"])
    for k in RUN_FIELDS:
        if getattr(config, k) is None and saved[k] is not None:
            setattr(config, k, saved[k])
    restored, now = TrainConfig(**saved, resume=config.resume).to_json(), config.to_json()
    differ = [f"{_as_given(k, restored[k])} (the run) vs {_as_given(k, now[k])} (now)"
              for k in RUN_FIELDS if restored[k] != now[k]]
    if state["world"] != world:
        differ.append(f"{state['world']} processes (the run) vs {world} (now)")
    if differ:
        raise ConfigError(f"{config.resume}: the resumed run must keep the run's options (resume_config restores "
                          "them); differing: " + "; ".join(differ))

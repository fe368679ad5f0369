"""Auto's INT8 without calibration frames: the INT8 artifact an earlier auto build made and checked, when it still
fits (same weights and model size, the engine auto picks for INT8 here, this CPU's weight grid, files intact)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import artifact_sha256, open_artifact
from ..backends import SPECS
from ..backends.spec import BuildConfig
from ..errors import ArtifactError
from ..precision import Precision

if TYPE_CHECKING:
    from .choice import HostFacts

__all__ = ["checked_int8"]

_log = logging.getLogger(__name__)


def checked_int8(config: BuildConfig, facts: "HostFacts") -> tuple[Path, str] | None:
    """The INT8 artifact to reuse for this auto build, and why in a sentence; None to build as planned.

    Only for an auto build from a checkpoint with no precision, no calibration frames and no -o: where
    calibration frames would make auto build INT8 on this machine, an INT8 artifact at the path that
    build writes, made from the same checkpoint at the same model size, whose sidecar records auto's
    agreement check at or above today's bar and whose weight grid fits this CPU, is what auto would make
    (minus the calibration). Anything else there is left alone and the float choice is built.
    """
    from ..int8_grid import cpu_fit_warning
    from .choice import AUTO_INT8_AGREEMENT, choose_backend

    if (config.backend != "auto" or config.precision is not None or config.calib is not None or config.onnx is not None
            or config.weights is None or config.output is not None or not Path(config.weights).is_file()):
        return None  # (a missing checkpoint is reported by the build itself)
    backend, precision, _ = choose_backend(facts, "auto", None, calibrated=True)
    if precision is not Precision.INT8:
        return None
    path = SPECS[backend].default_output(Precision.INT8, config.engines_dir)
    if not path.is_file():
        return None
    try:
        artifact = open_artifact(path)  # refuses what this version cannot run, and files that differ from the sidecar
    except ArtifactError as exc:
        _log.info(f"not reusing {path}: {exc}")
        return None
    info, sidecar = artifact.info, artifact.sidecar or {}
    check = sidecar.get("auto_int8_check")
    check = check if isinstance(check, dict) else {}
    recorded = check.get("agreement_with_fp32")
    agreement = float(recorded) if isinstance(recorded, (int, float)) else None
    why_not = None
    if sidecar.get("backend") != backend or info.precision is not Precision.INT8:
        why_not = f"it is not a {SPECS[backend].title} INT8 artifact"
    elif info.source_sha256 != artifact_sha256(config.weights):
        why_not = f"it was built from other weights than {config.weights}"
    elif info.model_size != config.model_size:
        why_not = "it was built for another model size"
    elif agreement is None:
        why_not = "auto's agreement check with FP32 is not recorded in its sidecar"
    elif agreement < AUTO_INT8_AGREEMENT:
        why_not = (f"its labels agreed with FP32 on {100 * agreement:.2f} % of pixels, below the "
                   f"{100 * AUTO_INT8_AGREEMENT:g} % bar")
    else:
        why_not = cpu_fit_warning(info.quantization, facts.cpu, path.name)
    if why_not or agreement is None:
        _log.info(f"not reusing {path}: {why_not}; building the float choice (--calib DIR builds INT8 again)")
        return None
    why = (f"auto's INT8 built from these weights ({sidecar.get('built_at', 'earlier')}): its labels agreed with the "
           f"FP32 reference on {100 * agreement:.2f} % of pixels of {check.get('frames', '?')} calibration frames "
           f"(bar {100 * AUTO_INT8_AGREEMENT:g} %)")
    return path, why


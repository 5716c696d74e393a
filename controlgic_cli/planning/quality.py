"""`--quality`: one fixed threshold on the planner's scores for every image (constant-slope rate control).

A bpp or size target gives every image the same bytes, so simple photos
waste them and busy ones starve. A dataset budget (rate.choose_dataset)
shares one threshold over a set instead, which spends bits where they gain
most; but its threshold depends on the set. A quality level is that shared
threshold fixed in advance: every image, in any batch, on any day, is cut
where a step stops gaining more than the same amount, like a JPEG quality
or an x264 CRF, and busy images simply get more bytes.

The scale is calibrated per model and planner (scores are in the planner's
units and depend on the decoder): at the anchor levels 10, 20, ..., 90 the
thresholds are those of a dataset budget over the 24 Kodak images at mean
bpps spread over the model's range (quality_calibration.py). Between anchors
the threshold is interpolated, and beyond them extrapolated, linearly in
asinh(T / unit), which is logarithmic for large thresholds and still defined
for the negative ones of the top levels. Quality 100 sends every cell fine;
0 keeps every cell coarse.

The scale is a JSON file beside the weights (`<weights stem>.quality.json`),
not part of the weights file, whose hash is the model id that every .cgic
file names: adding a scale to existing weights must not orphan their files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, OptionsError

ANCHORS = (10, 20, 30, 40, 50, 60, 70, 80, 90)
SCALE_SUFFIX = ".quality.json"
SCALE_FORMAT = "cgic-quality-scale-1"


@dataclass(frozen=True)
class PlannerScale:
    """Thresholds at the ANCHORS for one planner, and the unit the interpolation works in."""

    thresholds: tuple[float, ...]
    unit: float
    kodak_bpp: tuple[float, ...]  # the dataset mean each anchor was calibrated to (what users can expect)

    def threshold(self, quality: float) -> float:
        """The score threshold of a quality level in [0, 100]."""
        if quality >= 100:
            return -math.inf
        if quality <= 0:
            return math.inf
        if quality in ANCHORS:  # exactly the calibrated value (asinh and back may round off by an ulp)
            return self.thresholds[ANCHORS.index(quality)]
        levels = np.arcsinh(np.asarray(self.thresholds) / self.unit)
        # Linear in quality between anchors, and with the end segments' slopes beyond them.
        if quality < ANCHORS[0]:
            slope = (levels[1] - levels[0]) / (ANCHORS[1] - ANCHORS[0])
            level = levels[0] + slope * (quality - ANCHORS[0])
        elif quality > ANCHORS[-1]:
            slope = (levels[-1] - levels[-2]) / (ANCHORS[-1] - ANCHORS[-2])
            level = levels[-1] + slope * (quality - ANCHORS[-1])
        else:
            level = float(np.interp(quality, ANCHORS, levels))
        return float(self.unit * math.sinh(level))


@dataclass(frozen=True)
class QualityScale:
    """The quality levels of one model: a PlannerScale per planner."""

    model_id: str
    planners: dict[str, PlannerScale]
    command: str = ""  # how it was made

    def threshold(self, quality: float, planner: str) -> float:
        if not 0 <= quality <= 100:
            raise OptionsError(f"quality must be between 0 and 100, got {quality:g}")
        if planner not in self.planners:
            raise OptionsError(f"the quality scale of model {self.model_id} has no levels for the {planner} planner")
        return self.planners[planner].threshold(quality)

    def to_json(self) -> str:
        planners = {
            name: {"thresholds": list(scale.thresholds), "unit": scale.unit, "kodak_bpp": list(scale.kodak_bpp)}
            for name, scale in self.planners.items()
        }
        record = {
            "format": SCALE_FORMAT,
            "model_id": self.model_id,
            "anchors": list(ANCHORS),
            "planners": planners,
            "command": self.command,
        }
        return json.dumps(record, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> QualityScale:
        try:
            record = json.loads(text)
            if record.get("format") != SCALE_FORMAT or record.get("anchors") != list(ANCHORS):
                raise ValueError("unknown format or anchors")
            planners = {}
            for name, raw in record["planners"].items():
                thresholds = tuple(float(t) for t in raw["thresholds"])
                if len(thresholds) != len(ANCHORS) or bool(np.any(np.diff(thresholds) > 0)):
                    raise ValueError(f"{name}: thresholds must be {len(ANCHORS)} non-increasing numbers")
                unit = float(raw["unit"])
                if not unit > 0 or not all(math.isfinite(t) for t in thresholds):
                    raise ValueError(f"{name}: unit and thresholds must be finite, unit positive")
                planners[name] = PlannerScale(thresholds, unit, tuple(float(b) for b in raw["kodak_bpp"]))
            return cls(str(record["model_id"]), planners, str(record.get("command", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"quality scale {source} is damaged ({exc})") from None


def scale_path(weights_path: Path) -> Path:
    """Where the quality scale of a weights file lives: beside it, `<stem>.quality.json`."""
    return weights_path.with_name(weights_path.stem + SCALE_SUFFIX)


def load_scale(weights_path: Path, model_id: str) -> QualityScale:
    """The quality scale of these weights; ModelError when there is none or it is another model's."""
    path = scale_path(weights_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(
            f"--quality needs a quality scale for model {model_id} ({path.name} beside the weights); "
            "make one with python -m controlgic_cli.eval.quality_calibration, or use --target-bpp"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read quality scale {path}: {exc.strerror or exc}") from None
    scale = QualityScale.from_json(text, str(path))
    if scale.model_id != model_id:
        raise ModelError(f"quality scale {path.name} is for model {scale.model_id}, the weights are model {model_id}")
    return scale

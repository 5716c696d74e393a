"""The library API: images to .cgic bytes and back. The one place the stages meet.

    image -> SourceImage (image_io) -> pad to x16 -> indices of every cell (model)
          -> patch scores (measured: decoding errors, or planner: entropy) -> masks for the ratios (planner)
          -> Huffman streams + packed masks (entropy_coder)
          -> colour correction fitted to the decoded plan (colour_correction) -> .cgic (container)

Encoding is split in two so rate control can reuse one network pass:
analyse() runs the network once; encode_analysis() turns an analysis plus
ratios into bytes, cheaply, as often as needed.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .coding import colour_correction
from .coding.alpha_coding import pack_alpha, unpack_alpha
from .coding.container import (
    COLOUR_GREY,
    COLOUR_GREY_ALPHA,
    CgicHeader,
    CgicSections,
    ImageMetadata,
    pack_alpha_record,
    pack_file,
    pack_metadata,
    parse_file,
    read_header,
)
from .coding.index_coding import GroupUsageCoding, NeighbourRankCoding, UsageCoding
from .coding.mask_coding import MASK_CODINGS, unpack_file_masks
from .determinism import without_tf32
from .errors import ModelError, OptionsError
from .inference import NetworkPass, TiledNetwork
from .io.image_io import (
    ImageSource,
    SourceImage,
    check_codable_size,
    check_pixel_count,
    load_image,
    resize_source,
    to_pil,
)
from .io.metadata import attach, check_metadata_kinds
from .io.transparency import fill_invisible
from .metrics.distortion import psnr
from .model.weights import LoadedModel, default_weights_path, load_weights, shipped_weights_for
from .options import RATE_TARGETS, EncodeOptions
from .planning.measured import measured_scores
from .planning.planner import GranularityPlan, PatchScores, patch_entropy, plan_from_scores, weight_by_visibility
from .planning.quality import QualityScale, load_scale
from .planning.rate import RateChoice, RatePath, dataset_choices, rate_path
from .planning.ratios import DEFAULT_RATIOS, ppm_to_ratios, ratios_to_ppm
from .planning.tunes import DEFAULT_PLANNER, check_tune_and_planner
from .tiling import DEFAULT_TILES, Box, TileSpec

BLOCK = 16


@dataclass(frozen=True)
class EncodeStats:
    width: int
    height: int
    ratios: tuple[float, float, float]
    token_counts: tuple[int, int, int]  # (fine, medium, coarse) indices sent
    section_bytes: dict[str, int]  # header, masks, fine, medium, coarse
    size_bytes: int
    bpp: float


@dataclass(frozen=True)
class EncodeResult:
    data: bytes
    stats: EncodeStats
    warnings: list[str] = field(default_factory=list)
    target_reached: bool | None = None  # set by rate control: False when the target was out of reach
    psnr: float | None = None  # measured on the decoded image, by a PSNR target's search


@dataclass(frozen=True)
class Analysis:
    """One network pass over an image: everything needed to write it at any ratios."""

    source: SourceImage
    scores: PatchScores  # what the planner and rate control order patches by
    indices: tuple[np.ndarray, np.ndarray, np.ndarray]  # fine (H/4, W/4), medium, coarse
    alpha: bytes = b""  # the coded alpha plane (alpha_coding.py); empty for an opaque image
    planner: str = DEFAULT_PLANNER  # whose scores these are (a quality level's threshold is in their units)
    colour_correction: bool = False  # files written from it carry a colour correction (version 6)


def pad_to_block(image: np.ndarray) -> np.ndarray:
    """Replicate the last row/column of an (H, W, ...) array up to a multiple of 16 (cropped off after decoding)."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % BLOCK, -width % BLOCK
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (image.ndim - 2), mode="edge")


def _coded_colour(source: SourceImage) -> np.ndarray:
    """The colour the network codes: the source's, filled from the visible colour where it is fully transparent."""
    return source.rgb if source.alpha is None else fill_invisible(source.rgb, source.alpha)


Crop = tuple[int, int, int, int]  # left, top, width, height in pixels


def _crop_box(crop: Crop | None, width: int, height: int) -> Box:
    """The pixels to decode: the whole image, or a crop that must lie inside it."""
    if crop is None:
        return Box(0, 0, height, width)
    values = tuple(crop) if not isinstance(crop, str | bytes) else ()
    if len(values) != 4 or not all(isinstance(v, numbers.Integral) for v in values):
        raise OptionsError(f"crop must be four whole numbers (left, top, width, height), got {crop!r}")
    left, top, crop_width, crop_height = (int(v) for v in values)
    if (
        crop_width < 1
        or crop_height < 1
        or left < 0
        or top < 0
        or left + crop_width > width
        or top + crop_height > height
    ):
        raise OptionsError(
            f"crop {left},{top},{crop_width},{crop_height} (left, top, width, height) is not inside the "
            f"{width}x{height} image"
        )
    return Box(top, left, top + crop_height, left + crop_width)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for "auto", "cpu", "cuda" (or "cuda:N"), or a torch.device of those kinds; OptionsError
    for anything else."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise OptionsError(f"unknown device {device!r} (use auto, cpu or cuda)")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise OptionsError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
    if resolved.type not in ("cpu", "cuda"):
        raise OptionsError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError("--device cuda was asked for, but this torch build has no usable CUDA device")
    return resolved


def _full_precision(method):
    """A Codec method whose network passes run without TF32 on CUDA (determinism.without_tf32), which would
    change the indices relative to a CPU encode; torch's flags are as the caller set them before and after."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with without_tf32(self.device):
            return method(self, *args, **kwargs)

    return wrapped


class Codec:
    """A loaded model plus its Huffman tables: encodes and decodes .cgic bytes."""

    def __init__(
        self, weights: str | Path | None = None, device: str | torch.device = "auto", tiles: TileSpec = DEFAULT_TILES
    ):
        self.device = resolve_device(device)
        self.model: LoadedModel = load_weights(weights, self.device)
        self.network = TiledNetwork(self.model.network.to(memory_format=torch.channels_last), self.device, tiles)
        usage = self.model.code_usage
        if self.model.is_latent:
            # Model v2 writes and reads version 5 only.
            self.usage_coding = self.index_coding = GroupUsageCoding(usage)
        else:
            # Writes version 3 when the weights carry rank tables; reads version 1 and 2 files with usage coding.
            self.usage_coding = UsageCoding(usage)
            self.index_coding = self.usage_coding
            if self.model.rank_usage is not None:
                codebook = self.model.network.quantizer.codebook.detach().cpu().double().numpy()
                self.index_coding = NeighbourRankCoding(codebook, usage, self.model.rank_usage)
        self.mask_coding = MASK_CODINGS[self.index_coding.grouped_masks]

    @property
    def model_id(self) -> bytes:
        return self.model.model_id

    @property
    def corrects_colour(self) -> bool:
        """Whether files from these weights carry a colour correction (version 6): model v1 with rank tables."""
        return self.index_coding.rank_coded

    @functools.cached_property
    def quality_scale(self) -> QualityScale:
        """The quality levels of these weights (quality.py), read on first use; ModelError when they have none."""
        return load_scale(self.model.path, self.model_id.hex())

    # ----- encoding -----------------------------------------------------------------
    def analyse(
        self,
        image: ImageSource | SourceImage,
        tune: str = "perceptual",
        metadata=(),
        on_progress=None,
        planner: str = DEFAULT_PLANNER,
        colour_correction: bool = True,
    ) -> Analysis:
        return self.analyse_many([image], tune, metadata, on_progress, planner, colour_correction)[0]

    @_full_precision
    def analyse_many(
        self,
        images: list[ImageSource | SourceImage],
        tune: str = "perceptual",
        metadata=(),
        on_progress=None,
        planner: str = DEFAULT_PLANNER,
        colour_correction: bool = True,
    ) -> list[Analysis]:
        """analyse() of each image; same-size images go through the network together (the same results).

        tune "perceptual" takes the code nearest to each latent (what the
        decoder was trained on); "psnr" searches for indices that decode
        closer to the image, at about the same size (refine.py; seconds per image).
        metadata: the kinds the files keep, some of "icc", "exif", "xmp" (or
        "all"; metadata.py), for images not loaded yet.
        on_progress(done, total): called as the "psnr" search advances, then
        (counting from 0 again) as the measured planner's passes do, per image.
        planner "measured" scores patches by decoding every granularity (three
        decoder passes); "entropy" by the paper's patch entropy (none).
        colour_correction: files written from the analyses carry a colour
        correction (version 6; weights with rank tables only), fitted to the
        decoded plan: one decoder pass per file written.
        """
        _refuse_one_image(images, "analyse_many")
        check_tune_and_planner(tune, planner)
        if tune == "psnr" and self.model.is_latent:
            raise OptionsError("tune 'psnr' searches a VQ codebook: it needs model v1 weights, not these (model v2)")
        kinds = check_metadata_kinds(metadata)
        sources = [image if isinstance(image, SourceImage) else load_image(image, kinds) for image in images]
        if not self.index_coding.grouped_masks:  # alpha files are version 4 or 5
            sources = [
                source.without_alpha("these weights have no rank tables, which alpha files need") for source in sources
            ]
        for source in sources:
            check_codable_size(source.width, source.height)
        padded = [pad_to_block(_coded_colour(source)) for source in sources]
        if tune == "psnr":
            passes = [NetworkPass(self.network.refined_indices(rgb, on_progress=on_progress)) for rgb in padded]
        else:
            passes = self.network.encode_indices_many(padded)
        return [
            Analysis(
                source,
                self._scores(rgb, network_pass, planner, source.alpha, on_progress),
                network_pass.indices,
                pack_alpha(source.alpha) if source.alpha is not None else b"",
                planner,
                colour_correction and self.corrects_colour,
            )
            for source, rgb, network_pass in zip(sources, padded, passes, strict=True)
        ]

    def _scores(
        self,
        rgb: np.ndarray,
        network_pass: NetworkPass,
        planner: str,
        alpha: np.ndarray | None = None,
        on_progress=None,
    ) -> PatchScores:
        if planner == "entropy":
            scores = patch_entropy(rgb)
        else:
            scores = measured_scores(self.network, rgb, network_pass.indices, on_progress, network_pass.features)
        # Transparent patches are seen less (not at all at alpha 0), so they get tokens last.
        return scores if alpha is None else weight_by_visibility(scores, pad_to_block(alpha))

    def plan(self, analysis: Analysis, ratios_ppm: tuple[int, int, int]) -> GranularityPlan:
        return plan_from_scores(analysis.scores, ratios_ppm)

    def encode_analysis(
        self, analysis: Analysis, ratios_ppm: tuple[int, int, int], rate_controlled: bool = False
    ) -> EncodeResult:
        return self.encode_plan(analysis, self.plan(analysis, ratios_ppm), ratios_ppm, rate_controlled)

    def encode_plan(
        self,
        analysis: Analysis,
        plan: GranularityPlan,
        ratios_ppm: tuple[int, int, int],
        rate_controlled: bool = False,
    ) -> EncodeResult:
        """Write the file for an explicit plan; ratios_ppm only fills the (informational) header field.

        With a colour correction, the record's budget is a share of the bytes of
        the rest of the file (colour_correction.budget_bytes).
        """
        fine, medium, coarse = analysis.indices
        coding = self.index_coding
        sections = CgicSections(
            masks=self.mask_coding.pack(plan.coarse, plan.medium),
            fine=coding.encode("fine", fine, plan.fine),
            medium=coding.encode("medium", medium, plan.medium),
            coarse=coding.encode("coarse", coarse, plan.coarse),
            metadata=analysis.source.metadata,
            rank_coded=coding.rank_coded,
            alpha=analysis.alpha,
            grouped=coding.grouped,
        )
        source = analysis.source
        header = CgicHeader(
            width=source.width,
            height=source.height,
            colour_mode=source.colour_mode,
            ratios=ratios_ppm,
            model_id=self.model_id,
            rate_controlled=rate_controlled,
        )
        if analysis.colour_correction:
            budget = int(colour_correction.budget_bytes(sum(sections.sizes().values())))
            sections = dataclasses.replace(sections, correction=self._corrected_decode(analysis, plan, budget)[1])
        data = pack_file(header, sections)
        stats = EncodeStats(
            width=source.width,
            height=source.height,
            ratios=ppm_to_ratios(ratios_ppm),
            token_counts=plan.token_counts,
            section_bytes=sections.sizes(),
            size_bytes=len(data),
            bpp=8 * len(data) / (source.width * source.height),
        )
        return EncodeResult(data, stats, list(source.warnings))

    def encode(
        self,
        image: ImageSource | SourceImage,
        ratios=DEFAULT_RATIOS,
        tune: str = "perceptual",
        metadata=(),
        planner: str = DEFAULT_PLANNER,
    ) -> EncodeResult:
        return self.encode_with(image, EncodeOptions(ratios=ratios, tune=tune, metadata=metadata, planner=planner))

    def encode_with(self, image: ImageSource | SourceImage | Analysis, options: EncodeOptions) -> EncodeResult:
        """Encode one image as the options say: the one place the planning path is chosen (encode_analysis_with).

        An Analysis is written as it is (its tune, planner and metadata were
        chosen when it was made); an image is loaded, resized when the options
        ask, and analysed. A quality scale the weights lack fails before the
        network pass.
        """
        if not isinstance(options, EncodeOptions):
            raise TypeError(f"options must be an EncodeOptions, not {type(options).__name__}")
        if options.dataset_bpp is not None:
            raise OptionsError("a dataset budget is met over a set of images: use Codec.encode_dataset")
        if isinstance(image, Analysis):
            return self.encode_analysis_with(image, options)
        if options.quality is not None:
            self.quality_scale.threshold(options.quality, options.planner)
        source = image if isinstance(image, SourceImage) else load_image(image, options.metadata)
        if options.resize is not None:
            source = resize_source(source, options.resize)
        analysis = self.analyse(
            source, options.tune, options.metadata, planner=options.planner, colour_correction=options.colour_correction
        )
        return self.encode_analysis_with(analysis, options)

    def encode_analysis_with(
        self, analysis: Analysis, options: EncodeOptions, dataset_choice: RateChoice | None = None
    ) -> EncodeResult:
        """Write an analysed image as the options say: at their ratios, at the step their rate target picks on
        the image's rate path, or, under a dataset budget, at `dataset_choice` (from planning.rate.dataset_choices
        over the whole set)."""
        if options.ratios is not None:
            return self.encode_analysis(analysis, ratios_to_ppm(options.ratios))
        path = self.rate_path(analysis)
        if options.dataset_bpp is not None:
            if dataset_choice is None:
                raise OptionsError("a dataset budget is met over a set of images: use Codec.encode_dataset")
            return self.encode_choice(analysis, path, dataset_choice)
        choice, reached = options.rate_choice(
            path,
            analysis.source.width * analysis.source.height,
            lambda level: self.quality_scale.threshold(level, analysis.planner),
            lambda step: self._psnr_at(analysis, path, step),
        )
        result = self.encode_choice(analysis, path, choice)
        return result if reached is None else dataclasses.replace(result, psnr=reached)

    # ----- rate control ---------------------------------------------------------------
    def rate_path(self, analysis: Analysis) -> RatePath:
        record_bytes = len(pack_alpha_record(analysis.alpha)) + len(pack_metadata(analysis.source.metadata))
        budget = colour_correction.budget_bytes if analysis.colour_correction else None
        return rate_path(analysis.scores, analysis.indices, self.index_coding, self.mask_coding, record_bytes, budget)

    def encode_to_target(
        self,
        image: ImageSource | SourceImage,
        target_bpp: float | None = None,
        target_size: int | None = None,
        tune: str = "perceptual",
        metadata=(),
        target_psnr: float | None = None,
        planner: str = DEFAULT_PLANNER,
        quality: float | None = None,
    ) -> EncodeResult:
        """One network pass, then the plan nearest target_bpp, the largest within target_size bytes,
        about the smallest whose decoded image reaches target_psnr dB, or the plan of a quality level (0-100).

        Kept metadata counts: the whole file meets a size or bpp target. A PSNR
        target decodes candidate plans (about a dozen decoder passes, by
        bisection along the rate path) and reports the PSNR reached in `psnr`.
        A quality level is one threshold on the planner's scores for every
        image (quality.py): busy images get more bytes at the same level.
        encode_with(image, EncodeOptions(target_bpp=...)) is the same.
        """
        options = _rate_target(
            target_bpp, target_size, target_psnr, quality, tune=tune, metadata=metadata, planner=planner
        )
        return self.encode_with(image, options)

    def encode_analysis_to_target(
        self,
        analysis: Analysis,
        target_bpp: float | None = None,
        target_size: int | None = None,
        target_psnr: float | None = None,
        quality: float | None = None,
    ) -> EncodeResult:
        """encode_to_target for an image already analysed."""
        return self.encode_analysis_with(analysis, _rate_target(target_bpp, target_size, target_psnr, quality))

    @_full_precision
    def _psnr_at(self, analysis: Analysis, path: RatePath, step: int) -> float:
        """PSNR of what decoding the file at this step returns (grey sources as grey), against the source.

        With transparency, over the pixels that are not fully transparent (the others are never seen).
        """
        plan, budget = path.plan(step), path.correction_budget(step)
        return _psnr_against(analysis.source, self._corrected_decode(analysis, plan, budget)[0])

    @_full_precision
    def _corrected_decode(
        self, analysis: Analysis, plan: GranularityPlan, budget: int | None
    ) -> tuple[np.ndarray, bytes]:
        """What decoding the file of this plan returns (RGB), and its colour-correction record of `budget`
        bytes (b"" for None): the correction is fitted to the decoded plan, so the encoder decodes once."""
        source = analysis.source
        rgb = self.network.decode(analysis.indices, plan.coarse, plan.medium)[: source.height, : source.width]
        if budget is None:
            return rgb, b""
        channels = 1 if source.colour_mode in (COLOUR_GREY, COLOUR_GREY_ALPHA) else 3
        record, corrected = colour_correction.fit(_coded_colour(source), rgb, budget, channels)
        return corrected, record

    def measure_psnr(self, source: SourceImage, data: bytes) -> float:
        """PSNR of what decoding `data` returns against the image it was encoded from (as _psnr_at: grey as grey,
        with transparency over the pixels that are not fully transparent)."""
        rgb, _alpha, _header, _metadata = self._decode(data)
        return _psnr_against(source, rgb)

    def encode_dataset(
        self,
        images: list[ImageSource | SourceImage | Analysis],
        target_bpp: float,
        tune: str = "perceptual",
        metadata=(),
        planner: str = DEFAULT_PLANNER,
        colour_correction: bool = True,
    ) -> list[EncodeResult]:
        """Meet a mean bpp (total bits / total pixels) over a set, sharing one score threshold."""
        EncodeOptions(  # checks them
            dataset_bpp=target_bpp, tune=tune, metadata=metadata, planner=planner, colour_correction=colour_correction
        )
        _refuse_one_image(images, "encode_dataset")
        analyses = [
            image
            if isinstance(image, Analysis)
            else self.analyse(image, tune, metadata, planner=planner, colour_correction=colour_correction)
            for image in list(images)
        ]
        paths = [self.rate_path(a) for a in analyses]
        choices = dataset_choices(paths, [a.source.width * a.source.height for a in analyses], target_bpp)
        return [
            self.encode_choice(analysis, path, choice)
            for analysis, path, choice in zip(analyses, paths, choices, strict=True)
        ]

    def encode_choice(self, analysis: Analysis, path: RatePath, choice: RateChoice) -> EncodeResult:
        """Write the file at one step of the image's rate path (rate control and dataset budgets)."""
        result = self.encode_plan(analysis, path.plan(choice.step), path.ratios_ppm(choice.step), rate_controlled=True)
        if len(result.data) != choice.size_bytes:
            # The size model is exact by construction; a mismatch is a bug, not bad input.
            raise AssertionError(f"rate control predicted {choice.size_bytes} bytes, wrote {len(result.data)}")
        warnings = list(result.warnings) + ([choice.note] if not choice.reachable else [])
        return EncodeResult(result.data, result.stats, warnings, target_reached=choice.reachable)

    # ----- decoding -----------------------------------------------------------------
    def decode_array(self, data: bytes, crop: Crop | None = None) -> tuple[np.ndarray, CgicHeader]:
        """.cgic bytes -> uint8 (H, W, 3), or (H, W, 4) with alpha last for a file with transparency, and the header.

        crop: (left, top, width, height) in pixels, to decode only that part (Codec.decode).
        """
        rgb, alpha, header, _metadata = self._decode(data, crop)
        return (rgb if alpha is None else np.dstack([rgb, alpha])), header

    @_full_precision
    def _decode(
        self, data: bytes, crop: Crop | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, CgicHeader, ImageMetadata]:
        """.cgic bytes -> uint8 RGB (H, W, 3), the alpha plane (H, W) or None, the header and any metadata."""
        header, sections = parse_file(data)
        region = _crop_box(crop, header.width, header.height)
        # Version 1 and 2 files name the weights without their rank tables, which they do not use.
        coding, loaded_id = (
            (self.index_coding, self.model_id)
            if sections.grouped_masks
            else (self.usage_coding, self.model.base_model_id)
        )
        if header.model_id != loaded_id:
            raise ModelError(
                f"this file needs model {header.model_id.hex()}, but the loaded weights "
                f"({self.model.path.name}) are model {loaded_id.hex()}; pass --weights with the right file"
            )
        if sections.rank_coded and not coding.rank_coded:
            # Only a forged header gets here: version-3 files are written with rank tables, which change the id.
            raise ModelError(
                f"this version-3 file needs rank tables, which the loaded weights ({self.model.path.name}) lack"
            )
        if sections.rank_coded != coding.rank_coded or sections.grouped != coding.grouped:
            # A forged header: the model id pins the weights, and with them the coding.
            raise ModelError(
                f"this version-{sections.format_version} file's index coding does not match the loaded weights "
                f"({self.model.path.name})"
            )
        check_pixel_count(header.width, header.height)
        coarse_mask, medium_mask = unpack_file_masks(
            sections.masks, header.width, header.height, sections.grouped_masks
        )
        fine_mask = GranularityPlan(coarse=coarse_mask, medium=medium_mask).fine
        maps = [
            coding.decode(level, stream, mask)
            for level, mask, stream in (
                ("fine", fine_mask, sections.fine),
                ("medium", medium_mask, sections.medium),
                ("coarse", coarse_mask, sections.coarse),
            )
        ]
        # The records first: a damaged one fails before the network runs.
        alpha = unpack_alpha(sections.alpha, header.width, header.height) if sections.alpha else None
        correction = (
            colour_correction.unpack(sections.correction, header.width, header.height) if sections.correction else None
        )
        rgb = self.network.decode(tuple(maps), coarse_mask, medium_mask, region=region)
        if correction is not None:
            rgb = colour_correction.apply(rgb, correction, region.top, region.left)
        if alpha is not None:
            alpha = np.ascontiguousarray(alpha[region.scaled(1)])
        return rgb, alpha, header, sections.metadata

    def decode(self, data: bytes, crop: Crop | None = None) -> Image.Image:
        """.cgic bytes -> PIL image; a kept profile, Exif and XMP are in its info, where Pillow's savers look.

        crop: (left, top, width, height) in pixels: only that part, with the pixels of a whole decode, at the
        cost of the tiles it meets (2048 px squares), so large photos decode a detail quickly.
        """
        rgb, alpha, header, metadata = self._decode(data, crop)
        return attach(to_pil(rgb, header.colour_mode, alpha), metadata)

    def decode_tensor(self, data: bytes, crop: Crop | None = None) -> torch.Tensor:
        """.cgic bytes -> float (3, H, W) in [0, 1], (4, H, W) with alpha (torchvision's layout; grey sources have
        equal channels). crop as for decode."""
        pixels, _ = self.decode_array(data, crop)
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


def _refuse_one_image(images, method: str) -> None:
    """A path or an image where a list of images belongs would be iterated character by character, or by row."""
    if isinstance(images, str | bytes | Path | Image.Image | np.ndarray):
        raise TypeError(f"{method} takes a list of images, not one {type(images).__name__}")


def _rate_target(target_bpp=None, target_size=None, target_psnr=None, quality=None, **choices) -> EncodeOptions:
    """The options of encode_to_target's loose arguments, which must name one rate target (not ratios)."""
    options = EncodeOptions(
        target_bpp=target_bpp, target_size=target_size, target_psnr=target_psnr, quality=quality, **choices
    )
    if options.target not in RATE_TARGETS:
        raise OptionsError("give exactly one of target_bpp, target_size, target_psnr and quality")
    return options


def _psnr_against(source: SourceImage, rgb: np.ndarray) -> float:
    """PSNR of decoded uint8 RGB (the source's size) against the source, as a user sees the decoded image."""
    decoded = np.asarray(to_pil(np.ascontiguousarray(rgb), source.colour_mode))
    if decoded.ndim == 2:
        decoded = np.repeat(decoded[..., None], 3, axis=2)  # a grey source's channels are equal too
    if source.alpha is not None:
        seen = source.alpha > 0
        return psnr(source.rgb[seen][None], decoded[seen][None])
    return psnr(source.rgb, decoded)


def get_codec(weights: str | None = None, device: str = "auto") -> Codec:
    """A process-wide codec per (weights file, device), so weights load once however the two are spelled
    (None or the default path, "auto" or what it resolves to), also when threads ask at the same time."""
    path = Path(weights) if weights is not None else default_weights_path()
    key = (str(path.resolve()), str(resolve_device(device)))
    with _CODEC_LOADING:
        return _codec_for(*key)


_CODEC_LOADING = threading.Lock()


@functools.lru_cache(maxsize=4)
def _codec_for(weights: str, device: str) -> Codec:
    return Codec(weights, device)


get_codec.cache_clear = _codec_for.cache_clear  # for tests and for a process that replaces a weights file


def encode(
    image: ImageSource,
    ratios=DEFAULT_RATIOS,
    weights: str | None = None,
    device: str = "auto",
    tune: str = "perceptual",
    metadata=(),
    planner: str = DEFAULT_PLANNER,
) -> bytes:
    """Encode an image (path, bytes, PIL image or uint8/uint16 array) to .cgic bytes.

    metadata: what to keep of the image's colour profile, Exif and XMP: some
    of "icc", "exif", "xmp", or "all" (default: none). planner: "measured"
    (default) or "entropy" (faster encoding; Codec.analyse_many).
    """
    return get_codec(weights, device).encode(image, ratios, tune, metadata, planner).data


def codec_for_file(data: bytes, weights: str | None = None, device: str = "auto") -> Codec:
    """The codec that decodes these .cgic bytes: the given weights, else the shipped model the file names
    (files of every shipped model decode without --weights), else the default weights."""
    if weights is None and not os.environ.get("CGIC_WEIGHTS"):
        shipped = shipped_weights_for(read_header(data).model_id)
        weights = str(shipped) if shipped is not None else None
    return get_codec(weights, device)


class FileDecoder:
    """decode() of any .cgic bytes with codec_for_file: what `cgic decode` uses when no weights are named."""

    def __init__(self, device: str = "auto"):
        self.device = device

    def decode(self, data: bytes, crop: Crop | None = None) -> Image.Image:
        return codec_for_file(data, None, self.device).decode(data, crop)


def decode(data: bytes, weights: str | None = None, device: str = "auto", crop: Crop | None = None) -> Image.Image:
    """Decode .cgic bytes to a PIL image (mode RGB, or L for grey sources; RGBA or LA with transparency);
    crop: (left, top, width, height) to decode only that part (Codec.decode). Without weights, the shipped
    model that wrote the file decodes it."""
    return codec_for_file(data, weights, device).decode(data, crop)


def read_info(data: bytes) -> CgicHeader:
    """The header of .cgic bytes, without loading any model."""
    return read_header(data)

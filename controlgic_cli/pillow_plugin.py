"""A Pillow plugin for .cgic, registered when controlgic_cli is imported.

    import controlgic_cli
    im = Image.open("x.cgic")            # header only: size and mode, no model
    im.load()                            # decodes with the default model
    im.save("y.cgic", ratios=(0.3, 0.6, 0.1))   # or target_bpp=0.39, target_size=...

Opening reads and checks the whole file (cheap: no network), so a damaged
file fails in Image.open, as Pillow users expect, rather than later.
Decoding runs the network only in load(), following Pillow's handbook.
Save options: the fields of controlgic_cli.options.EncodeOptions (one of ratios, target_bpp, target_size,
target_psnr, quality; tune, planner, metadata: "all" or some of "icc", "exif", "xmp", kept from im.info;
resize), and weights, device. A file
with kept metadata opens with it in im.info ("icc_profile", "exif", "xmp").
"""

from __future__ import annotations

import dataclasses
import io

from PIL import Image, ImageFile, UnidentifiedImageError

from .coding.container import DECODED_PIL_MODES, MAGIC, parse_file
from .errors import CgicError, FormatError
from .io.metadata import attach
from .options import EncodeOptions
from .planning.ratios import ppm_to_ratios

# Every encode option is a save option (a tune or target Pillow hands over in encoderinfo goes to EncodeOptions).
_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(EncodeOptions))

FORMAT = "CGIC"
MIME = "image/x-cgic"


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


class CgicImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "Control-GIC learned image"

    def _open(self) -> None:
        data = self.fp.read()
        try:
            header, sections = parse_file(data)
        except FormatError as exc:
            # The magic matched, so this is ours and broken: say why, instead of
            # Pillow's generic "cannot identify" that a SyntaxError would become.
            raise UnidentifiedImageError(
                f"damaged .cgic file {self.filename or ''}: {exc}".replace(" :", ":")
            ) from None
        self._cgic_data = data
        self._size = (header.width, header.height)
        self._mode = DECODED_PIL_MODES[header.colour_mode]
        self.info["cgic_ratios"] = ppm_to_ratios(header.ratios)
        self.info["cgic_model_id"] = header.model_id.hex()
        self.info["cgic_rate_controlled"] = header.rate_controlled
        attach(self, sections.metadata)  # a kept profile, Exif and XMP, under Pillow's usual keys
        self.tile = []

    def load(self):
        if not self.tile and self._im is None:
            from .api import codec_for_file

            try:
                decoded = codec_for_file(self._cgic_data).decode(self._cgic_data)
            except CgicError as exc:
                raise OSError(f"cannot decode .cgic file: {exc}") from None
            self.fp = io.BytesIO(decoded.tobytes())
            self.tile = [ImageFile._Tile("raw", (0, 0, *self.size), 0, decoded.mode)]
        return super().load()


def _save(im: Image.Image, fp, filename) -> None:
    from .api import get_codec

    info = im.encoderinfo
    options = EncodeOptions(**{name: info[name] for name in _OPTION_NAMES if name in info})
    fp.write(get_codec(info.get("weights"), info.get("device", "auto")).encode_with(im, options).data)


def register() -> None:
    Image.register_open(FORMAT, CgicImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".cgic")
    Image.register_mime(FORMAT, MIME)

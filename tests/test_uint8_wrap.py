"""geetiles' uint8 S1GRD encoding as it really is: unclipped, so dB outside [-30, 0] wraps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarveg import read_tile
from sarveg.dataset import index_dataset
from sarveg.simulate.layout import simulate_dataset
from sarveg.tiles import decode_sigma0_db, encode_uint8_db


def test_encoding_wraps_around_and_decodes_back() -> None:
    db = np.array([[[-15.0, 3.0, -33.0, -12.5]]], np.float32)
    codes = encode_uint8_db(db)
    assert codes.tolist() == [[[127, 24, 231, 148]]]
    decoded = decode_sigma0_db(codes, np.dtype("uint8"))
    assert abs(decoded[0, 0, 0] + 15.0) < 30 / 255  # in range: one code of quantisation
    assert decoded[0, 0, 1] < -27.0  # a bright +3 dB target reads very dark
    assert decoded[0, 0, 2] > -3.0  # very dark -33 dB water reads bright


def test_simulated_uint8_tiles_report_suspected_wraps(tmp_path: Path) -> None:
    uint8 = tmp_path / "uint8"
    floats = tmp_path / "float"
    for out, encoding in ((uint8, "uint8"), (floats, "float32")):
        simulate_dataset(
            out, ["europe"], 6, 48, seed=3, workers=1, progress=False, s1grd_encoding=encoding
        )
    warned = 0
    for a, b in zip(index_dataset(uint8, "s1grd"), index_dataset(floats, "s1grd"), strict=True):
        wrapped, reference = read_tile(a.path), read_tile(b.path)
        assert wrapped.encoding == "s1grd-16band-uint8-db"
        inside = (reference.array[:4] > -29.0) & (reference.array[:4] < -1.0)
        np.testing.assert_allclose(
            wrapped.array[:4][inside], reference.array[:4][inside], atol=0.13
        )
        outside = int(np.any((reference.array[:4] > 0) | (reference.array[:4] < -30), axis=0).sum())
        if outside:
            (warning,) = wrapped.input.warnings
            count = int(warning.split()[0])
            assert 0.5 * outside <= count <= outside + 2, (count, outside)
            assert "look wrapped: geetiles' uint8 encoding wraps dB outside [-30, 0]" in warning
            warned += 1
        else:
            assert wrapped.input.warnings == ()
        assert reference.input.warnings == ()  # float dB has no wrap to suspect
    assert warned >= 1  # europe's bright urban pixels exceed 0 dB in some tiles

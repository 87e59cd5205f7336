"""Builders shared by ``tests/`` and ``bench/``.

Generated tiles, hostile files, tiny bundles and a real ``bentoml serve`` process. Not
installed with the package; both put the repository root on ``sys.path``.

- :mod:`testkit.tiles`: tiny GeoTIFF / NetCDF tiles written with rasterio and h5netcdf.
- :mod:`testkit.hostile`: uploads that point at server files, header bombs, a seeded mutator.
- :mod:`testkit.bundles`: torch-free ONNX bundles with generated reference sets.
- :mod:`testkit.server`: start and stop the service on a free port.
"""

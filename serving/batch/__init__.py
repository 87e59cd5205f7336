"""Batch inference over a folder of tiles or a mosaic (``sarveg predict``).

- :mod:`serving.batch.inputs`: what a run reads (a geetiles folder, loose files, a mosaic);
- :mod:`serving.batch.pipeline`: units of tiles, the local engine, one unit's prediction;
- :mod:`serving.batch.ray_engine`: the same units in a Ray Data actor pool;
- :mod:`serving.batch.outputs`: the resumable part-file store, table and summary;
- :mod:`serving.batch.quicklook_map`: the map GeoTIFF and its PNG quick-look;
- :mod:`serving.batch.cli`: the command line.
"""

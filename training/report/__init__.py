"""``sarveg report``: the paper's experiment protocol on any dataset in the geetiles layout.

Modules, one concept each: ``config`` (the typed protocol settings), ``experiments`` (the
fine-tuning runs and their test predictions), ``analysis`` (tables, SWD, t-SNE), ``figures``
(PNGs), ``markdown`` (the written report) and ``cli`` (the command).
"""

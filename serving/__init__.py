"""sarveg serving: the HTTP service (BentoML) over a plain ONNX Runtime predictor.

``serving`` imports ``sarveg`` and never ``training`` or torch. Importing it limits BLAS to
one thread per process unless the environment says otherwise: it must happen before numpy
loads, which in a ``bentoml serve`` worker is when ``serving.service`` is imported. Requests
already run in parallel, and OpenBLAS's spinning thread pool on top of ONNX Runtime's threads
oversubscribes the cores (a 448 px resample: ~3 ms with one thread, up to hundreds of ms
contended on a busy 2-core machine).
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

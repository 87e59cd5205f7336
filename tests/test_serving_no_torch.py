"""Serving imports and runs with torch (and training) made unimportable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sarveg import bands
from testkit.bundles import build_bundle
from testkit.tiles import s1grd_db, write_geotiff

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = {"torch", "torchvision", "timm", "training"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked for this test", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_blocked(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(BLOCKER + textwrap.dedent(code))
    env = os.environ | {"PYTHONPATH": str(ROOT), "BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )


def test_blocker_really_blocks(tmp_path: Path) -> None:
    result = run_blocked("import torch\n", tmp_path)
    assert result.returncode != 0 and "torch is blocked for this test" in result.stderr


def test_serving_imports_and_predicts_without_torch(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "models", "s1grd")
    tile = write_geotiff(tmp_path / "t.tif", s1grd_db(), bands.S1GRD_RAW_BANDS)
    result = run_blocked(
        f"""
        import serving, serving.service, serving.predictor, serving.uploads
        from serving.predictor import Predictor
        predictor = Predictor.from_paths({str(bundle.directory)!r})
        answer = predictor.predict(open({str(tile)!r}, "rb").read())
        assert 0.0 <= answer.vegetation_pct <= 100.0
        leaked = {{"torch", "timm", "training"}} & {{m.split(".")[0] for m in sys.modules}}
        assert not leaked, leaked
        print("ok", answer.model.name)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok tiny-s1grd-europe" in result.stdout

"""Write the demo model's TorchScript export, ``assets/demo/traced``.

The dashboard's first start computes a quick preview of the demo in a fresh process; importing
diffusers there costs about 5 s on a 2-core machine, longer than the preview's own work. The
preview therefore loads the demo's UNet and VAE encoder traced to TorchScript
(:mod:`ldminv_core.models.traced`): this script traces them from ``assets/demo/model``, checks
the traced outputs against the diffusers modules (an export that differs by more than
``EXPORT_ATOL`` is refused) and records the SHA-256 of every model file, so the export is used
only while the model folder is unchanged. Rerun it whenever ``assets/demo/model`` changes
(tests/core/models/test_traced.py fails until then).

    python scripts/export_demo_traced.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldminv_core import demo  # noqa: E402
from ldminv_core.models.traced import export_traced  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=demo.DEMO_TRACED_DIR)
    args = ap.parse_args(argv)
    manifest = export_traced(demo.DEMO_MODEL_DIR, args.out)
    print(f"wrote {args.out}: largest difference from the diffusers modules "
          f"{json.dumps(manifest['checked']['max_abs_diff'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

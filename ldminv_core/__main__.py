"""Command line: ``python -m ldminv_core analyze ...`` and ``python -m ldminv_core report RUN``.

analyze   run (or resume) a membership-leakage analysis into a run folder, printing the cost
          estimate first and a progress bar per stage; ``--demo`` analyzes the bundled demo (reusing
          its shipped decoder geometry when it applies; ``--recompute-geometry`` computes it);
          ``--demo shift`` analyzes the shift demo: two folders of images the demo model never saw,
          footwear as "members" and clothes as "held-out" (pure distribution shift, no member at
          all; :func:`ldminv_core.demo.build_shift_demo_data` builds them under $LDMINV_HOME).
report    print the report of a finished run under an evaluation protocol (``--protocol
          standard|paper|honest``) as a table, or as the JSON object of the method reference
          (``--json``).

User errors print one line ``error: ...`` on stderr and exit with status 2. Every option and
both image folders are checked before the model is loaded. ``analyze`` into a folder that holds a
complete run made with other settings exits with status 2 naming them (``--force`` recomputes);
with the same settings it prints a note and exits 0.
"""
from __future__ import annotations

import sys

from .cli.main import main


if __name__ == "__main__":
    sys.exit(main())

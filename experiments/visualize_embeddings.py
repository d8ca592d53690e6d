"""The embedding visualisation script: ``python experiments/visualize_embeddings.py RUN_DIR [--method ...] [--html]``.

Same as ``python -m siamese visualize``; kept here so the experiment scripts sit together. ``--html`` also
writes the explorer page, ``RUN_DIR/projections/explorer.html``.
"""

import sys

from siamese.cli import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))

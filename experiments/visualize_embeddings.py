"""The embedding visualisation script: ``python experiments/visualize_embeddings.py RUN_DIR [--method ...]``.

Same as ``python -m siamese visualize``; kept here so the experiment scripts sit together.
"""

import sys

from siamese.cli import main

if __name__ == "__main__":
    sys.exit(main(["visualize", *sys.argv[1:]]))

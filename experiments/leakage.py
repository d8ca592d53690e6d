"""The leaked-vs-clean experiment in one command:

    python experiments/leakage.py --dataset ham10000 --data-dir DIR --duplicates pairs.csv --out runs/leakage

Same as ``python -m siamese leakage``; defaults to the synthetic lesions (CPU, minutes).
"""

import sys

from siamese.cli import main

if __name__ == "__main__":
    sys.exit(main(["leakage", *sys.argv[1:]]))

"""Train the Siamese embedding and the classifier: ``python train.py --help``."""

import sys

from siamese.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], script="train.py"))

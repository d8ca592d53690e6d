"""Classify images with a trained run: ``python predict.py --run RUN_DIR IMAGE_OR_FOLDER...``."""

import sys

from siamese.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]], script="predict.py"))

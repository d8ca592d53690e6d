import sys

from siamese.cli import main

sys.exit(main())

"""Build a verified Numerai model-upload pickle. `python build_model.py --help` explains every option."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Build a verified Numerai model-upload pickle. `python build_model.py --help` explains every option."""

import signal
import sys

if __name__ == "__main__":
    from pipeline.outputs import terminate_as_exit

    # SIGTERM exits 143 from before the imports (seconds) to the command's end. After it the outputs
    # are committed or left as they were, so it is ignored: Python would put back the default action
    # while it shuts down, and a SIGTERM there killed the process (-15) after a whole build.
    with terminate_as_exit(afterwards=signal.SIG_IGN):
        from pipeline.cli import main

        code = main()
    sys.exit(code)

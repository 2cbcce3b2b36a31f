"""The entry file of a hosted demo. `python -m publish demo` copies it to the bundle root as `app.py`, next to this
`app/` package; the platform runs `python app.py` and every setting comes from environment variables
(MODEL_ID, ADAPTER_ID, BITS, SYSTEM_PROMPT, ...; see `python -m app --help`)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("GRADIO_SERVER_NAME", "0.0.0.0")  # reachable through the platform's proxy
    from app.main import main

    sys.exit(main([]))

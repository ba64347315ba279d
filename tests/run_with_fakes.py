"""Run the real ragcli CLI in a subprocess with the test embedder registered (``test-hash``).

``FAKE_GENERATOR=hang`` makes ``ask``'s generator block in ``generate`` (to kill a process
mid-generation); the product knows nothing of it."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import HashEmbedder  # noqa: E402
from ragcli.cli.app import main  # noqa: E402
from ragcli.embedder import EMBEDDERS  # noqa: E402

EMBEDDERS["test-hash"] = HashEmbedder
if os.environ.get("FAKE_GENERATOR") == "hang":
    from fakes import EchoGenerator  # noqa: E402
    from ragcli.cli import ask  # noqa: E402

    class Hang(EchoGenerator):
        def generate(self, prompt, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(3600)

    ask.gguf_generator = lambda settings: Hang()  # type: ignore[assignment]
main()

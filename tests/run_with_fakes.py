"""Run the real ragcli CLI in a subprocess with the test embedder registered (``test-hash``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import HashEmbedder  # noqa: E402
from ragcli.cli.app import main  # noqa: E402
from ragcli.embedder import EMBEDDERS  # noqa: E402

EMBEDDERS["test-hash"] = HashEmbedder
main()

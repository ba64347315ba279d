"""Run the real ragcli CLI in a subprocess with the test embedder registered (``test-hash``).

``FAKE_GENERATOR=hang`` makes ``ask``'s generator block in ``generate`` and in
``score_continuations`` (to kill a process while the model runs); ``FAKE_GENERATOR=slow`` makes
``ask`` and ``chat`` use the echo generator, streaming a word a second (to press Ctrl-C while it
writes); the product knows nothing of it."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import HashEmbedder  # noqa: E402
from ragcli.cli.app import main  # noqa: E402
from ragcli.runtimes.embedder import EMBEDDERS  # noqa: E402

EMBEDDERS["test-hash"] = HashEmbedder
if os.environ.get("FAKE_GENERATOR") == "hang":
    from fakes import EchoGenerator  # noqa: E402
    from ragcli.cli import ask  # noqa: E402

    class Hang(EchoGenerator):
        def generate(self, prompt, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(3600)

        def score_continuations(self, messages, continuations, on_prompt=None, **kwargs):  # type: ignore[no-untyped-def]
            if on_prompt is not None:
                on_prompt(self.render(messages))
            time.sleep(3600)

    ask.gguf_generator = lambda settings: Hang()  # type: ignore[assignment]
if os.environ.get("FAKE_GENERATOR") == "slow":
    from fakes import EchoGenerator  # noqa: E402
    from ragcli.cli import ask, chat  # noqa: E402

    class Slow(EchoGenerator):
        def generate(self, prompt, *, on_token=None, **kwargs):  # type: ignore[no-untyped-def]
            def each(text: str) -> None:
                for word in text.split(" "):
                    time.sleep(1.0)
                    if on_token is not None:
                        on_token(word + " ")

            return super().generate(prompt, on_token=each, **kwargs)

    ask.gguf_generator = lambda settings: Slow()  # type: ignore[assignment]
    chat.gguf_generator = lambda settings: Slow()  # type: ignore[assignment]
main()

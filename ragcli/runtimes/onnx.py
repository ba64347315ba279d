"""One way to open an ONNX file for the CPU, for every ONNX model ragcli runs (the embedder, the
reader): quiet logs, threads that sleep when a run ends, and a one-line error naming the file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelError


def cpu_session(path: Path, threads: int = 0, config: Mapping[str, str] | None = None) -> Any:
    """An onnxruntime session of ``path`` on the CPU; ``threads`` intra-op threads (0: every core).

    Its threads sleep once a run ends instead of spinning on the cores the GGUF model's threads
    are about to use (generation.scoring_threads counts running threads); the outputs are the same
    either way."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, value)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except ImportError:
        raise ModelError("onnxruntime is not installed", hint="pip install onnxruntime") from None
    except Exception as exc:  # a damaged cache file: say where it is
        raise ModelError(f"cannot load {path}: {exc}", hint="delete the file to build it again") from None

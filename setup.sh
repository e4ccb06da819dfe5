#!/bin/sh
# One set-up command: installs gpunet into .venv beside this file (created if
# absent) and, where apt-get exists, Debian's Fashion-MNIST, so training works
# without internet access. Nothing needs activating afterwards: run
# .venv/bin/gpunet and .venv/bin/python directly.
#   ./setup.sh          the package
#   ./setup.sh --dev    the package with the test tools (pytest, array-api-strict, ruff, ...)
#   ./setup.sh --bench  the package with PyTorch's CPU build and matplotlib, for `gpunet bench`
#                       (from $GPUNET_TORCH_INDEX, by default https://download.pytorch.org/whl/cpu)
#   ./setup.sh --cuda   the package with cupy for NVIDIA GPUs (CUDA 12 driver)
#   ./setup.sh --cuda13 the same for a CUDA 13 driver
set -eu
cd "$(dirname "$0")"

extras=""
bench=""
for arg in "$@"; do
  case "$arg" in
    --dev) extras="${extras:+$extras,}dev" ;;
    --cuda) extras="${extras:+$extras,}cuda" ;;
    --bench) extras="${extras:+$extras,}bench"; bench=1 ;;
    --cuda13) extras="${extras:+$extras,}cuda13" ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --bench, --cuda or --cuda13)" >&2; exit 2 ;;
  esac
done
case ",$extras," in
  *,dev,*) case ",$extras," in *,cuda,*)
    # --dev brings cupy-cuda13x for the kernel checks, and two cupy builds cannot share an environment.
    echo "setup.sh: --dev installs cupy-cuda13x, which cannot sit beside --cuda's cupy-cuda12x; use --dev --cuda13" >&2
    exit 2 ;;
  esac ;;
esac

[ -x .venv/bin/python ] || python3 -m venv .venv
# -qq: errors only (pip's warnings about unusable index locations are noise here).
pip="./.venv/bin/python -m pip install -qq --disable-pip-version-check"

# PyPI's torch for Linux is the CUDA build (with ~20 nvidia-* wheels, gigabytes); the
# benchmark's reference needs the CPU build, which PyTorch publishes on its own index.
# Installed first, so that the bench extra finds torch already satisfied.
if [ -n "$bench" ] && ! ./.venv/bin/python -c "import torch" >/dev/null 2>&1; then
  $pip torch --index-url "${GPUNET_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
fi
$pip -e ".${extras:+[$extras]}"

datasets=/usr/share/datasets/fashion-mnist
if [ ! -d "$datasets" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist; } >/dev/null; then
    echo "setup.sh: could not install Debian's dataset-fashion-mnist; gpunet will download data on first use" >&2
  fi
fi

#!/bin/sh
# One set-up command: installs gpunet into the active virtual environment (or a
# new .venv beside this file) and, where apt-get exists, Debian's Fashion-MNIST,
# so `gpunet train` works without internet access.
#   ./setup.sh          the package
#   ./setup.sh --dev    the package with the test tools (pytest, array-api-strict, ruff, ...)
#   ./setup.sh --cuda   the package with cupy for NVIDIA GPUs
set -eu
cd "$(dirname "$0")"

extras=""
for arg in "$@"; do
  case "$arg" in
    --dev) extras="${extras:+$extras,}dev" ;;
    --cuda) extras="${extras:+$extras,}cuda" ;;
    *) echo "setup.sh: unknown option $arg (use --dev and/or --cuda)" >&2; exit 2 ;;
  esac
done

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  python=.venv/bin/python
else
  python=python
fi
"$python" -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"

datasets=/usr/share/datasets/fashion-mnist
if [ ! -d "$datasets" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist; } >/dev/null; then
    echo "setup.sh: could not install Debian's dataset-fashion-mnist; gpunet will download data on first use" >&2
  fi
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  echo "gpunet is installed in .venv: run '. .venv/bin/activate', then 'gpunet train'"
fi

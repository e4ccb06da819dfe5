#!/usr/bin/env bash
# Mutation testing by hand (too slow for CI): each module of [tool.mutmut] in pyproject.toml gets
# small bugs put in one at a time, and the tests that reach the mutated function are run against
# each; a mutant the tests do not notice "survives". See mutation/README.md.
#
#   mutation/run.sh                 every module, one after the other
#   mutation/run.sh flat model      only these (gpunet/flat.py, gpunet/model.py)
#
# It works on a copy of the committed tree (HEAD) in $MUTATION_DIR (default: a new temporary
# folder), never in this checkout, at low priority (nice 15) with $MUTATION_JOBS parallel children
# (default 2). Needs the `mutation` extra: pip install -e '.[dev,mutation]'.
# Writes $MUTATION_DIR/results-<module>.txt (every mutant and its fate) and prints the survivors.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
work=${MUTATION_DIR:-$(mktemp -d -t gpunet-mutation.XXXXXX)}
jobs=${MUTATION_JOBS:-2}
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(flat files optimizers idx model checkpoint engine data train bench)
fi

mkdir -p "$work"
git -C "$repo" archive HEAD | tar -x -C "$work"
commit=$(git -C "$repo" rev-parse HEAD)
cd "$work"
echo "mutating $commit in $work with $("$python" -m mutmut --version 2>/dev/null || echo mutmut)"
for module in "${modules[@]}"; do
  start=$(date +%s)
  nice -n 15 "$python" -m mutmut run --max-children "$jobs" "gpunet.$module.*" >"run-$module.log" 2>&1 || true
  "$python" -m mutmut results --all true | grep "gpunet\.$module\." >"results-$module.txt" || true
  total=$(wc -l <"results-$module.txt")
  killed=$(grep -c ": killed$" "results-$module.txt" || true)
  echo "$module: $killed of $total killed in $(($(date +%s) - start)) s"
  grep -v ": killed$" "results-$module.txt" || true
done

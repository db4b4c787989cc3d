#!/usr/bin/env bash
# The main job, end to end on one machine: a real multi-arch build (amd64 + arm64, the arm64
# half under qemu) of examples/samba, pushed as one manifest list to a local registry, read
# back and printed. Run as root on a fresh Debian/Ubuntu machine: it installs what it needs.
#
#   sudo bash examples/demo.sh            # PLATFORMS="linux/amd64 linux/arm64" PORT=5000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-5000}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64}"
REGISTRY_DIR="${REGISTRY_DIR:-/var/tmp/taskimage-demo-registry}"
REG="127.0.0.1:$PORT"

bash .ci/setup-host
ti=.venv/bin/taskimage

echo "==> starting a local registry on $REG (storage $REGISTRY_DIR)"
$ti dev registry --dir "$REGISTRY_DIR" --port "$PORT" >/dev/null &
registry_pid=$!
results=$(mktemp -d)
trap 'kill $registry_pid 2>/dev/null; wait $registry_pid 2>/dev/null; rm -rf "$results"' EXIT
for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.2; done

echo "==> base image: Debian bookworm minbase for ${PLATFORMS// /, } (mmdebstrap; cached after the first run)"
base_platforms=$(echo "$PLATFORMS" | tr ' ' ',')
$ti dev base-image bookworm "$REG/base/debian:bookworm" --platform "$base_platforms" >/dev/null

echo "==> taskimage build"
# shellcheck disable=SC2086
$ti build --image "$REG/demo/samba:1.0" --context examples/samba \
  --build-arg "BASE_IMAGE=$REG/base/debian:bookworm" --tls-verify=false \
  --results-dir "$results" $PLATFORMS

echo
echo "==> Tekton results"
for f in "$results"/*; do printf '%-13s %s\n' "$(basename "$f")" "$(cat "$f")"; done
echo
echo "==> the pushed manifest list, read back from the registry"
skopeo inspect --tls-verify=false --raw "docker://$REG/demo/samba:1.0" | python3 -m json.tool
for ref in $(tr ',' ' ' < "$results/IMAGES"); do
  printf '%s  ' "$ref"
  skopeo inspect --tls-verify=false --config --raw "docker://$ref" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["os"] + "/" + c["architecture"] + ("/" + c["variant"] if c.get("variant") else ""))'
done

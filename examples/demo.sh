#!/usr/bin/env bash
# The main job, end to end on one machine, as a user's cluster would run it: examples/pac/build.yaml
# (the .tekton/ PipelineRun an app repository copies) run by `taskimage run` as Pipelines-as-Code
# would run it for a push to `main` of a local git repository holding examples/samba. Its
# Pipeline (catalog buildah-multiarch) comes from a pipelines bundle this script pushes to a local
# registry, the build step runs the task image built from this checkout, the build is
# linux/amd64 + linux/arm64 (the arm64 half under qemu), and the pushed list is read back.
# Run as root on a fresh Debian/Ubuntu machine: it installs what it needs.
#
#   sudo bash examples/demo.sh
#
# What this machine cannot reach is replaced by a local stand-in, and the run says so:
# ghcr.io/taskimage/* (the released bundles) is redirected to the local registry by a
# registries.conf; tektoncd/catalog's git-clone (git resolver on github.com, image on gcr.io) by
# taskimage/dev/git-clone.yaml (same interface) with `--stand-in fetch-source=...`.
#
# Knobs: PORT (5000), PLATFORMS ("linux/amd64 linux/arm64"), TASK_IMAGE_PLATFORMS (the host's),
# REGISTRY_DIR, PIPELINE=matrix (tekton/pipelinerun-matrix.yaml: one TaskRun per platform, then
# the index), MODE=task (the catalog Task alone), DIRECT=1 (plain `taskimage build` on the host).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-5000}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64}"
REGISTRY_DIR="${REGISTRY_DIR:-/var/tmp/taskimage-demo-registry}"
REG="127.0.0.1:$PORT"
BASE="$REG/base/debian:bookworm"
checkout=$PWD

bash .ci/setup-host
ti=$checkout/.venv/bin/taskimage
py=$checkout/.venv/bin/python
TASK_IMAGE_PLATFORMS="${TASK_IMAGE_PLATFORMS:-$($py -c 'from taskimage.oci.platforms import host_platform; print(host_platform())')}"

echo "==> starting a local registry on $REG (storage $REGISTRY_DIR)"
$ti dev registry --dir "$REGISTRY_DIR" --port "$PORT" >/dev/null 2>&1 &
registry_pid=$!
work=$(mktemp -d)
git_pid=""
# the script's own status survives the clean-up (under set -e, `wait` on the killed registry,
# status 143, would otherwise end the trap and the script with 143 after a successful run)
trap 'rc=$?; kill $registry_pid $git_pid 2>/dev/null || true; wait $registry_pid $git_pid 2>/dev/null || true; rm -rf "$work"; exit $rc' EXIT
for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.2; done

echo "==> base image for the app: Debian bookworm minbase for ${PLATFORMS// /, } (mmdebstrap; cached after the first run)"
$ti dev base-image bookworm "$BASE" --platform "$(echo "$PLATFORMS" | tr ' ' ',')" >/dev/null

show_list() {  # the pushed manifest list and each image's real platform, read from the registry
  echo
  echo "==> the pushed manifest list, read back from the registry: $1"
  skopeo inspect --tls-verify=false --raw "docker://$1" | python3 -m json.tool
  for ref in $(echo "$2" | tr ',' ' '); do
    printf '%s  ' "$ref"
    skopeo inspect --tls-verify=false --config --raw "docker://$ref" \
      | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["os"] + "/" + c["architecture"] + ("/" + c["variant"] if c.get("variant") else ""))'
  done
}

if [ "${DIRECT:-0}" = 1 ]; then
  echo "==> taskimage build (on the host)"
  mkdir -p "$work/results"
  # shellcheck disable=SC2086
  $ti build --image "$REG/demo/samba:direct" --context examples/samba --build-arg "BASE_IMAGE=$BASE" \
    --tls-verify=false --results-dir "$work/results" $PLATFORMS
  show_list "$REG/demo/samba:direct" "$(cat "$work/results/IMAGES")"
  exit 0
fi

echo "==> task image for ${TASK_IMAGE_PLATFORMS// /, }, built from this checkout by taskimage build (cached layers after the first run)"
builder=$($ti dev task-image "$REG" --platform "$(echo "$TASK_IMAGE_PLATFORMS" | tr ' ' ',')" 2> "$work/task-image.log") \
  || { tail -30 "$work/task-image.log"; exit 1; }
echo "    $builder"

if [ "${MODE:-pac}" = task ]; then
  echo "==> taskimage run catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml"
  mkdir -p "$work/storage" "$work/results"
  $ti run catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml \
    -p "IMAGE=$REG/demo/samba:task" -p "PLATFORMS=$(echo "$PLATFORMS" | tr ' ' ',')" \
    -p "BUILD_ARGS=BASE_IMAGE=$BASE" -p TLSVERIFY=false -p "BUILDER_IMAGE=$builder" \
    -w source=examples/samba -w "storage=$work/storage" --tls-verify=false --results-dir "$work/results"
  show_list "$REG/demo/samba:task" "$(cat "$work/results/IMAGES")"
  exit 0
fi

echo "==> the Tasks and Pipelines bundles, rendered as a release renders them, pushed to $REG/taskimage"
$py -m taskimage.tekton.catalog --release-dir "$work/release" --builder-image "$builder" >/dev/null
$ti bundle push "$REG/taskimage/tasks:0.1" "$work/release/tasks.yaml" --tls-verify=false >/dev/null
tasks_digest=$(skopeo inspect --tls-verify=false --raw "docker://$REG/taskimage/tasks:0.1" | sha256sum | cut -d' ' -f1)
$py -m taskimage.tekton.catalog --release-dir "$work/release" --builder-image "$builder" \
  --task-bundle "$REG/taskimage/tasks@sha256:$tasks_digest" >/dev/null
$ti bundle push "$REG/taskimage/pipelines:0.1" "$work/release/pipelines.yaml" --tls-verify=false >/dev/null
cat > "$work/registries.conf" <<CONF
# stand-in: the released bundles (ghcr.io/taskimage/*) are the ones just pushed to $REG
[[registry]]
prefix = "ghcr.io/taskimage"
location = "$REG/taskimage"
insecure = true
[[registry]]
location = "$REG"
insecure = true
CONF
export CONTAINERS_REGISTRIES_CONF="$work/registries.conf"
echo "    ghcr.io/taskimage -> $REG/taskimage (registries.conf, a stand-in for the release)"

echo "==> a local git repository holding examples/samba, branch main, served by git daemon"
git_port=$($py -c 'from taskimage.dev.env import free_port; print(free_port())')
mkdir -p "$work/git"
cp -r examples/samba "$work/git/samba"
git -C "$work/git/samba" init -q -b main
git -C "$work/git/samba" -c user.name=demo -c user.email=demo@example.com add .
git -C "$work/git/samba" -c user.name=demo -c user.email=demo@example.com commit -q -m "samba app"
git -C "$work/git/samba" remote add origin "git://127.0.0.1:$git_port/samba"
git daemon --export-all --reuseaddr --listen=127.0.0.1 --port="$git_port" --base-path="$work/git" "$work/git" &
git_pid=$!
revision=$(git -C "$work/git/samba" rev-parse HEAD)
echo "    git://127.0.0.1:$git_port/samba at $revision"

echo "==> the git-clone stand-in's image (Debian trixie + git; cached after the first run)"
$ti dev git-image >/dev/null
mkdir -p "$work/dockerconfig"
echo '{"auths": {}}' > "$work/dockerconfig/config.json"  # the dockerconfig Secret: no credentials needed here

if [ "${PIPELINE:-pac}" = matrix ]; then
  echo "==> taskimage run tekton/pipelinerun-matrix.yaml (matrix: one TaskRun per platform, then the index)"
  archs=$(for p in $PLATFORMS; do echo "${p#linux/}"; done | paste -sd,)
  # no stand-in: the matrix Pipeline clones with our source-artifact Task (from the tasks bundle)
  $ti run tekton/pipelinerun-matrix.yaml \
    -p "url=git://127.0.0.1:$git_port/samba" -p "REPOSITORY=$REG/demo/samba" -p TAG=matrix \
    -p "PLATFORMS=$archs" -p "BUILD_ARGS=BASE_IMAGE=$BASE" -p TLSVERIFY=false \
    -w "dockerconfig=$work/dockerconfig" --tls-verify=false --output json > "$work/report.json"
  image="$REG/demo/samba:matrix"
else
  echo "==> taskimage run examples/pac/build.yaml, as Pipelines-as-Code would for a push to main"
  image="$REG/demo/samba:$revision"
  $ti run examples/pac/build.yaml --repo "$work/git/samba" --event push --branch main \
    --stand-in "fetch-source=taskimage/dev/git-clone.yaml" \
    -p "IMAGE=$image" -p "PLATFORMS=$(echo "$PLATFORMS" | tr ' ' ',')" \
    -p "BUILD_ARGS=BASE_IMAGE=$BASE" -p TLSVERIFY=false \
    -w "dockerconfig=$work/dockerconfig" --tls-verify=false --output json > "$work/report.json"
fi
echo
echo "==> Pipeline results"
$py -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; [print(f"{k:13} {v}") for k, v in r.items()]' "$work/report.json"
show_list "$image" "$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["IMAGES"])' "$work/report.json")"

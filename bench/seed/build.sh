#!/bin/bash
# The seed's build step, as its Tekton Task ran it (see /work/shared/notes/tekton-facts.md, "The
# starting point"): a serial loop of `buildah bud --storage-driver vfs --manifest tekton -t $IMAGE
# --platform $p .` over the platforms, then `buildah manifest push --all tekton
# docker://$IMAGE:latest`. Run it in the build context directory.
#
# Adapted only as far as this machine needs, each marked "adaptation":
#   - BUILDAH_ISOLATION=chroot (the OCI-runtime isolation fails here);
#   - --tls-verify=false, as the local registry speaks plain HTTP;
#   - --build-arg BASE_IMAGE, so the Containerfile uses the locally made Debian base;
#   - the storage location comes from CONTAINERS_STORAGE_CONF (graphroot/runroot), so the command
#     lines stay the seed's.
#
# Usage: IMAGE=registry/repo BASE_IMAGE=registry/base:tag build.sh PLATFORM...
set -e
: "${IMAGE:?set IMAGE}" "${BASE_IMAGE:?set BASE_IMAGE}"
export BUILDAH_ISOLATION=chroot                                                  # adaptation

for p in "$@"; do
  buildah bud --storage-driver vfs --manifest tekton -t "$IMAGE" --platform "$p" \
    --tls-verify=false --build-arg "BASE_IMAGE=$BASE_IMAGE" .                     # adaptation: last line
done
buildah manifest push --all tekton "docker://$IMAGE:latest" --tls-verify=false   # adaptation: --tls-verify

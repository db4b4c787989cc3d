#!/bin/bash
# tektoncd/catalog e2e: run a registry as a sidecar of the build TaskRun (localhost:5000).
add_sidecar_registry ${TMPF}

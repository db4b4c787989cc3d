"""The Tekton wing: object model, catalog generation, bundles, lint, local runs, cluster access."""

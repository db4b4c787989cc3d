"""OCI and registry basics shared by every wing: platforms, image references, registry access and credentials."""

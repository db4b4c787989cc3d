"""The image build: orchestration, the reuse key, buildah, verification, storage, the list, results, and the one params declaration."""

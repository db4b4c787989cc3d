"""The developer environment (local registry, base images, the task image build): not shipped in the task image."""

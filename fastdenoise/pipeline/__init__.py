"""The folder run: listing, loading, batching, inference, tiling, outputs, manifest and lock."""

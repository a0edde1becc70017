"""Text, embeddings and moderation inference: protocol codecs, routing, billing and endpoints."""

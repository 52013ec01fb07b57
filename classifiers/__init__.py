"""Embedding, classification and LLM arbitration for shelfwise."""
from classifiers.embedding import Embedder, EmbeddingCache, make_embedder
__all__ = ["Embedder", "EmbeddingCache", "make_embedder"]

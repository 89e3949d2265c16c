"""Vectors: encoders, FAISS indexes, versioned index artifacts, the served version and the fresh delta."""

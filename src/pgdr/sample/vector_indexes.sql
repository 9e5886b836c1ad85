CREATE INDEX embeddings_embedding_hnsw ON embeddings USING hnsw (embedding extensions.vector_cosine_ops);
CREATE INDEX knowledge_base_embedding_hnsw ON knowledge_base USING hnsw (embedding extensions.vector_cosine_ops);

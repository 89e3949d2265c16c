"""Storage: the SQL schema and data access, input records, imports, and the content-addressed image store."""

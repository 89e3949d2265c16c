"""Search use cases: semantic, keyword and hybrid search, and typeahead."""

"""HTTP: the Flask app factory, request runtime, blueprints, schemas, errors, security and metrics."""

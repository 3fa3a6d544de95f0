"""Studio mode: projects on a shared PostgreSQL database (each in a schema of its own), files mirrored on S3,
several workstations working on one project."""

"""Encrypted provider secrets (SPEC 5.1 project_api_secrets): the vault encrypts, the repo stores."""

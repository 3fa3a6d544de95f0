"""Creative knowledge (SPEC 2.3, 5.2, 5.5 prompt_templates): style guides and their rules, reference sets,
characters, and versioned prompt templates with their placeholders."""

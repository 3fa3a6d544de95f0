"""Moving a project as a whole: its rows between stores (rows.py), the standalone package format (manifest.py),
exporting (export.py) and importing (import_.py) it."""

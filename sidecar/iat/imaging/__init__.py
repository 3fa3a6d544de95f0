"""Pure image functions on numpy arrays and PIL images: OKLab colour, colour correction, QA metrics, perceptual
hashes, connected components, PNG I/O. No database, no commands: the pipeline and the `images.*` / `quality.*`
commands call these."""

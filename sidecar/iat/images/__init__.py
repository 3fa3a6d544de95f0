"""Image operations on any image asset of a project outside a run (background removal, upscaling, colour
correction) and the QA guard on one asset; see `iat.images.service`."""

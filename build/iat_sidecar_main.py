"""Entry point of the frozen sidecar: PyInstaller freezes this script, which hands over to `iat.cli.main()`."""

import sys

if __name__ == "__main__":
    from iat.cli import main

    sys.exit(main())

from iat.cli import main

raise SystemExit(main())

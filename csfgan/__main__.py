from csfgan.cli import main

raise SystemExit(main())

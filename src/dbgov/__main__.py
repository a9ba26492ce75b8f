from dbgov.cli import main

raise SystemExit(main())

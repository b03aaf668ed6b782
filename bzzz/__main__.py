from bzzz.cli import main

raise SystemExit(main())

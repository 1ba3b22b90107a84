from runstream.cli import main

raise SystemExit(main())

from model_export.cli import main

raise SystemExit(main())

from boltorezka.cli import main

raise SystemExit(main())

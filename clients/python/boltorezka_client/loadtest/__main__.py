from boltorezka_client.loadtest.cli import main

raise SystemExit(main())

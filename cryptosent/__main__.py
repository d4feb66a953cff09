from cryptosent.cli import main

raise SystemExit(main())

"""``python -m crdtstream`` runs the same command line as the ``crdtstream`` script."""

from crdtstream.cli import main

raise SystemExit(main())

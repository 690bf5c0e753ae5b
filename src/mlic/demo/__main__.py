"""`python -m mlic.demo`: build an offline demo data set (see `mlic.demo.build`)."""

from mlic.demo.build import main

raise SystemExit(main())

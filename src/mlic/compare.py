"""`python -m mlic.compare`: one row per experiment (see `mlic.evaluate.compare`)."""

from mlic.evaluate.compare import main

if __name__ == "__main__":
    raise SystemExit(main())

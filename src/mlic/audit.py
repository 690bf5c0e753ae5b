"""`python -m mlic.audit experiments/<name>`: rank the train and valid labels a trained experiment's model
disagrees with (see `mlic.train.audit`)."""

from mlic.train.audit import main

if __name__ == "__main__":
    raise SystemExit(main())

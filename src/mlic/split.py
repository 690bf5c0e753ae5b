"""`python -m mlic.split`: split one label table into train/valid/test (see `mlic.data.split`)."""

from mlic.data.split import main

if __name__ == "__main__":
    raise SystemExit(main())

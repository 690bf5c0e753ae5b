"""`python -m mlic.report experiments/<name>`: write report.html of finished experiments (see
`mlic.evaluate.report_page`)."""

from mlic.evaluate.report_page import main

if __name__ == "__main__":
    raise SystemExit(main())

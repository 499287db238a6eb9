"""Allow `python -m csvjobs`."""

from csvjobs.cli import main

main()

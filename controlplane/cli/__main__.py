"""`python -m controlplane.cli`: the `controlplane` command."""

from controlplane.cli.main import main

main()

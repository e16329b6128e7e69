"""``python -m crmcal`` runs the command line."""

from crmcal.cli import main

main()

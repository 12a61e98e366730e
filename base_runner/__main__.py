from ._cli.cli import main

main()

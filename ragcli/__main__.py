from ragcli.cli.app import main

main()

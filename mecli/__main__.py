from mecli.cli import main

main()

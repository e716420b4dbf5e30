from backlane.cli import main

main()

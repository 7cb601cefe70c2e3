from fridaymorning.cli import main

main()

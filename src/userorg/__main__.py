from userorg.cli import main

main()

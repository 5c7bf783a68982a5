from pudato.cli import main

main()

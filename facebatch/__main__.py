from facebatch.cli.app import main

main()

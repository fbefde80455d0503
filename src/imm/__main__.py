from imm.cli.main import main

main()

from gpunet.cli.commands import main

main()

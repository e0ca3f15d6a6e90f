from tenantflow.runtime.cli.main import main

main()

"""rolebroker's command line and client integrations. Nothing here imports boto3 on a
fast path: the CLI speaks HTTP to the daemon."""

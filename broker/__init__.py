"""rolebroker daemon: brokers AWS role credentials through the container credentials endpoint."""

__version__ = "0.1.0"

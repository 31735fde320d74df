"""NAT-type classifier: RFC 3489 classic tests and RFC 5780 behaviour discovery."""

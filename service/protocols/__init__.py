"""Wire protocols. Each module translates its format to and from the data plane, nothing more."""

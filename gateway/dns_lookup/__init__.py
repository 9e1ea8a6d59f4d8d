"""The DNS edge: resolvers built from [dns] and MX lookup (dnspython). I/O, kept out of mail/."""

"""The client side: accepting connections and parsing their requests."""

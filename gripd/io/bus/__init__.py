"""The bus that carries published items to every place holding subscribers."""

"""The stores: module stores (worker.stores.modules), session stores (worker.stores.sessions),
and the registry that loads a provider's SDK only when it is used."""

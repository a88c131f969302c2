"""API profiles: seed API shapes mapped onto engine calls, each mountable beside the native API."""

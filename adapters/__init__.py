"""I/O adapters: stores, bindings, profiles. Imported as runengine.adapters.*"""

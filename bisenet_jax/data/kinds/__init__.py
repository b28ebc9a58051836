"""One module per dataset kind: its reader, its `DatasetInfo` and its `config.data.<kind>` defaults.

A kind lives in one file so that everything about one dataset (classes, colours, mean/std, label
map, folder layout, options) is read and changed in one place; each module ends with `KIND`, the
`DatasetKind` that `bisenet_jax/data/registry.py` puts under its name. Kind modules import only
the shared floor of the data package (decode, info, reader), never the registry or each other.
"""
